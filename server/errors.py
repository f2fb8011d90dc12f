"""Errors of the HTTP routes, in OpenAI's shape (``{"error": {message, type, param, code}}``),
so clients written for OpenAI's API show them as they would OpenAI's."""

from __future__ import annotations

import msgspec
from starlette.responses import Response

_json = msgspec.json.Encoder()


class ErrorDetail(msgspec.Struct, kw_only=True):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(msgspec.Struct, kw_only=True):
    """OpenAI's error shape."""

    error: ErrorDetail


def error_response(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = ErrorBody(error=ErrorDetail(message=message, type=type_, param=param, code=code))
    return Response(
        _json.encode(body), status_code=status, media_type="application/json", headers=headers
    )


def param_of(message: str) -> str | None:
    marker = "at `$."
    if marker in message:
        return message.split(marker, 1)[1].split("`", 1)[0].split(".")[0].split("[")[0]
    if "required field `" in message:
        return message.split("required field `", 1)[1].split("`", 1)[0]
    return None
