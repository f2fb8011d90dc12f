"""Access control in front of every route: an ASGI middleware.

- WebSockets from a browser page of another site are refused with 403 unless the
  page's Origin is allowed (cross-site WebSocket hijacking), keys or not.
- With API keys configured, every data route needs one (``Authorization: Bearer``)
  or a token from ``POST /v1/tokens`` (``?token=``). Public: ``/health`` and the
  static pages (``/``, ``/demo/…``, ``/docs``, ``/openapi.json``), which carry no data.
- Requests per minute are counted per key here; the WebSocket session and the
  speech route apply the session and character limits themselves.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import msgspec
import structlog
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from server.auth import AuthError, credentials, digest, key_id, origin_allowed
from server.speech import error_response

if TYPE_CHECKING:
    from server.app import AppState

log = structlog.get_logger("voxwire.access")

_NO_STORE = (
    "the shared state store (Redis) is not reachable, so API keys cannot be checked; retry shortly"
)
_PUBLIC_EXACT = frozenset({"/health", "/", "/demo", "/docs", "/openapi.json"})
_PUBLIC_PREFIX = ("/demo/", "/docs/")
_ERROR_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
}


def is_public(path: str) -> bool:
    return path in _PUBLIC_EXACT or path.startswith(_PUBLIC_PREFIX)


class AccessControl:
    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
        }
        if kind == "websocket" and not origin_allowed(
            headers.get("origin"), headers.get("host"), self.state.allowed_origins
        ):
            await self._deny(
                scope,
                send,
                AuthError(
                    403,
                    "origin_not_allowed",
                    f"WebSocket from origin {headers.get('origin')!r} is not allowed; the server "
                    "accepts its own origin and those in allowed_origins",
                ),
            )
            return
        try:
            if is_public(scope["path"]) or not await self.state.keys.enabled():
                kid = None
            else:
                kid, via_token = await self._authenticate(headers, scope.get("query_string", b""))
        except AuthError as exc:
            await self._deny(scope, send, exc)
            return
        except (RedisError, OSError):
            await self._deny(scope, send, AuthError(503, "state_unavailable", _NO_STORE))
            return
        if kid is None:  # open access, or a public page
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["key_id"] = kid
        scope["state"]["via_token"] = via_token
        if kind == "http":
            over = await self.state.limits.request(kid)
            if over is not None:
                self.state.metrics.errors.labels("rate_limited").inc()
                resp = error_response(
                    429,
                    over.message(),
                    "rate_limit_error",
                    code=over.limit,
                    headers={"Retry-After": str(over.retry_after_s)},
                )
                await resp(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _authenticate(self, headers: dict[str, str], query: bytes) -> tuple[str, bool]:
        key, token = credentials(headers, query)
        if key is not None:
            d = digest(key)
            if await self.state.keys.has(d):
                return key_id(d), False
            raise AuthError(401, "invalid_api_key", "the API key is not valid")
        if token is not None:
            kid = self.state.tokens.verify(token)
            if await self.state.keys.by_id(kid) is None:
                raise AuthError(
                    401, "invalid_token", "the key this token was minted for is no longer valid"
                )
            return kid, True
        raise AuthError(
            401,
            "missing_api_key",
            "an API key is required: send "
            "'Authorization: Bearer <key>', or ?token= from POST /v1/tokens",
        )

    async def _deny(self, scope: Scope, send: Send, exc: AuthError) -> None:
        self.state.metrics.errors.labels(exc.code).inc()
        log.info("access_denied", code=exc.code, path=scope["path"], kind=scope["type"])
        body = msgspec.json.encode(
            {
                "error": {
                    "message": exc.message,
                    "type": _ERROR_TYPE.get(exc.status, "error"),
                    "param": None,
                    "code": exc.code,
                }
            }
        )
        hdrs = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if exc.status == 401:
            hdrs.append((b"www-authenticate", b"Bearer"))
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": exc.status, "headers": hdrs})
            await send({"type": "http.response.body", "body": body})
            return
        if "websocket.http.response" in scope.get("extensions", {}):
            await send(
                {"type": "websocket.http.response.start", "status": exc.status, "headers": hdrs}
            )
            await send({"type": "websocket.http.response.body", "body": body})
        else:  # the server answers a close before accept with 403
            await send({"type": "websocket.close", "code": 1008})


class TokenRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    ttl_s: float | None = None


class TokenResponse(msgspec.Struct, kw_only=True):
    token: str
    expires_at: float
    expires_in: float


async def mint_token(request: Request) -> Response:
    state: AppState = request.app.state.voxwire
    if not await state.keys.enabled():
        return error_response(
            400, "no API keys are configured: connect without a token", code="auth_disabled"
        )
    if request.scope.get("state", {}).get("via_token"):
        return error_response(
            403,
            "a token cannot mint tokens; use an API key",
            "permission_error",
            code="token_not_allowed",
        )
    raw = await request.body()
    try:
        req = msgspec.json.decode(raw or b"{}", type=TokenRequest)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return error_response(400, f"bad token request: {exc}")
    ttl = state.tokens.max_ttl_s if req.ttl_s is None else req.ttl_s
    if not 1 <= ttl <= state.tokens.max_ttl_s:
        return error_response(
            400, f"ttl_s must be between 1 and {state.tokens.max_ttl_s:g}", param="ttl_s"
        )
    kid: str = request.scope["state"]["key_id"]
    token, exp = state.tokens.mint(kid, ttl)
    return Response(
        msgspec.json.encode(
            TokenResponse(token=token, expires_at=exp, expires_in=round(exp - time.time(), 3))
        ),
        media_type="application/json",
    )
