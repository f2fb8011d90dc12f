"""What the dialect codecs share: reading a JSON object, typed fields, base64."""

from __future__ import annotations

import base64
from typing import Any

import msgspec

from server.dialects.intents import DialectError

_decoder = msgspec.json.Decoder()
encode = msgspec.json.Encoder().encode


def json_object(text: str, close_code: int | None = None) -> dict[str, Any]:
    """The message as a JSON object, or DialectError ``invalid_json`` / ``invalid_message``."""
    try:
        obj = _decoder.decode(text)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise DialectError(
            "invalid_json", f"message is not valid JSON: {exc}", close_code
        ) from None
    if not isinstance(obj, dict):
        raise DialectError("invalid_message", "every message is a JSON object", close_code)
    return obj


def field(
    obj: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None
) -> Any:
    """``obj[name]`` if it has the right type (None and absent give ``default``)."""
    value = obj.get(name)
    if value is None:
        return default
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise DialectError("invalid_field", f"{name!r} must be a number, not a boolean")
    if not isinstance(value, kind):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DialectError("invalid_field", f"{name!r} must be {want}, not {type(value).__name__}")
    return value


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def clamp_speed(speed: float, lo: float = 0.5, hi: float = 2.0) -> float:
    """The engines' speed range (``start.speed`` in the native protocol)."""
    return min(hi, max(lo, float(speed)))
