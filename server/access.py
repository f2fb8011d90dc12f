"""Access control in front of every route: an ASGI middleware.

- A request or WebSocket with more than one ``Authorization`` or ``Origin`` header
  is refused with 400 (which one counts would be a guess, and a proxy may have
  guessed differently).
- WebSockets from a browser page of another site are refused with 403 unless the
  page's Origin is allowed (cross-site WebSocket hijacking), keys or not. A page
  counts as the server's own only when its Host is one the server is known by, so a
  DNS-rebound name is refused too; on HTTP that same shape (Origin equal to an
  unknown Host) is refused as well.
- With API keys configured, every data route needs one (``Authorization: Bearer``)
  or a token from ``POST /v1/tokens`` (``?token=``). Public: ``/health`` and the
  static pages (``/``, ``/demo/…``, ``/docs``, ``/openapi.json``), which carry no data.
  Keys expected but gone from Redis: 503 ``access_rules_lost`` (``KeyRing``).
- Request bodies are bounded while they stream in (``max_body_bytes``; voice uploads
  check ``voice_max_bytes`` themselves): a declared length over the limit is refused
  before anything is read, a longer chunked body as soon as the count passes it.
  A client that goes away mid-body ends its request quietly (one log line).
- Requests per minute are counted per key here; the WebSocket session and the
  speech route apply the session and character limits themselves.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import msgspec
import structlog
from redis.exceptions import RedisError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server import admission
from server.auth import (
    AuthError,
    credentials,
    digest,
    host_is_known,
    key_id,
    origin_allowed,
)
from server.errors import error_response, param_of

if TYPE_CHECKING:
    from server.appstate import AppState

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
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
}
# Headers that decide access: exactly one of each, or the request is refused.
_SINGLE = ("authorization", "origin", "xi-api-key", "x-api-key")
_CLOSE = (b"connection", b"close")


def is_public(path: str) -> bool:
    return path in _PUBLIC_EXACT or path.startswith(_PUBLIC_PREFIX)


def _split(spec: str) -> frozenset[str]:
    return frozenset(s.strip().rstrip("/") for s in spec.split(",") if s.strip())


class BodyTooLarge(Exception):
    def __init__(self, limit: int, size: int, declared: bool) -> None:
        super().__init__(f"body over {limit} bytes")
        self.limit = limit
        self.size = size
        self.declared = declared

    def message(self) -> str:
        if self.declared:
            return (
                f"the request body is {self.size} bytes (Content-Length); the limit is "
                f"{self.limit} bytes (setting max_body_bytes)"
            )
        return (
            f"the request body is longer than {self.limit} bytes, the limit (setting "
            "max_body_bytes); it was refused as it came in"
        )


class _Body:
    """One HTTP request's body as the app reads it: counted against its limit, and
    whether it was read to its end (if not, the response closes the connection so
    the unread rest is not read and thrown away, and cannot pose as a next request)."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, limit: int | None) -> None:
        headers = scope.get("headers", [])
        length = next((v for k, v in headers if k == b"content-length"), None)
        chunked = any(k == b"transfer-encoding" for k, _ in headers)
        self.declared = int(length) if length is not None and length.isdigit() else None
        self.done = not chunked and not self.declared
        self.limit = limit
        self.received = 0
        self.started = False
        self._scope = scope
        self._receive = receive
        self._send = send

    def declared_too_large(self) -> BodyTooLarge | None:
        if self.limit is not None and self.declared is not None and self.declared > self.limit:
            return BodyTooLarge(self.limit, self.declared, declared=True)
        return None

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if not message.get("more_body", False):
                self.done = True
            if self.limit is not None and self.received > self.limit:
                raise BodyTooLarge(self.limit, self.received, declared=False)
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            headers = list(message.get("headers", []))
            if not self.done and _CLOSE not in headers:
                headers.append(_CLOSE)
            if message["status"] == 405:
                headers = _allow_every_method(self._scope, headers)
            message = {**message, "headers": headers}
        await self._send(message)


def _allow_every_method(
    scope: Scope, headers: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """A 405's ``Allow`` names the methods of every route of the path: Starlette names
    only those of the first route that matched (``GET``/``POST /v1/voices`` are two)."""
    router = getattr(scope.get("app"), "router", None)
    methods: set[str] = set()
    for route in getattr(router, "routes", ()):
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches(scope)
            if match is not Match.NONE:
                methods |= route.methods
    if not methods:
        return headers
    allow = ", ".join(sorted(methods)).encode()
    return [(k, v) for k, v in headers if k.lower() != b"allow"] + [(b"allow", allow)]


def _read_headers(scope: Scope) -> tuple[dict[str, str], AuthError | None]:
    """The request's headers by lower-case name, and a refusal when a header that
    decides access (``_SINGLE``) comes more than once."""
    headers: dict[str, str] = {}
    twice: list[str] = []
    for k, v in scope.get("headers", []):
        name = k.decode("latin-1").lower()
        if name in headers and name in _SINGLE and name not in twice:
            twice.append(name)
        headers[name] = v.decode("latin-1")
    if not twice:
        return headers, None
    shown = " and ".join(n.title() for n in twice)
    return headers, AuthError(
        400, "duplicate_header", f"the request has more than one {shown} header; send exactly one"
    )


async def authenticate_key(state: AppState, key: str) -> str | None:
    """The id of ``key`` if it is a valid API key, else None (store errors propagate)."""
    d = digest(key)
    if await state.keys.has(d):
        return key_id(d)
    return None


def key_in_first_message(scope: Scope) -> bool:
    """A WebSocket whose dialect (ElevenLabs) may carry its key in the first message."""
    path = str(scope.get("path", ""))
    return scope["type"] == "websocket" and path.endswith(("/stream-input", "/multi-stream-input"))


class AccessControl:
    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state
        s = state.settings
        # Names this server is reached by, besides IP addresses and loopback names.
        self.known_hosts = _split(s.allowed_hosts.lower()) | {s.host.lower()}
        # Origins trusted for the HTTP rebinding check: WebSocket ones and CORS ones.
        self.http_origins = state.allowed_origins | _split(s.cors_origins)

    def body_limit(self, scope: Scope) -> int | None:
        """The body limit of a request; None where the route enforces its own."""
        if scope["method"] == "POST" and scope["path"] == "/v1/voices":
            return None  # voices.api reads at most voice_max_bytes (+ form), as it streams
        return self.state.settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        body: _Body | None = None
        if kind == "http":
            body = _Body(scope, receive, send, self.body_limit(scope))
            receive, send = body.receive, body.send
        if await self._refused(scope, receive, send, body):
            return
        if body is None:
            await self.app(scope, receive, send)
        else:
            await self._call_with_body(scope, receive, send, body)

    async def _refused(
        self, scope: Scope, receive: Receive, send: Send, body: _Body | None
    ) -> bool:
        """Checks the request in order (headers, origin, declared size, key, rate) and
        answers the first refusal; True when it answered and the app must not run."""
        headers, refused = _read_headers(scope)
        if refused is None:
            refused = self._origin_refusal(scope["type"], scope["path"], headers)
        if refused is not None:
            await self._deny(scope, send, refused)
            return True
        if body is not None and (too_large := body.declared_too_large()) is not None:
            await self._too_large(scope, receive, send, too_large)
            return True
        try:
            kid, via_token = await self._key_of(scope, headers)
        except AuthError as exc:
            await self._deny(scope, send, exc)
            return True
        except (RedisError, OSError):
            await self._deny(scope, send, AuthError(503, "state_unavailable", _NO_STORE))
            return True
        if kid is None:
            return False
        scope.setdefault("state", {})["key_id"] = kid
        scope["state"]["via_token"] = via_token
        return scope["type"] == "http" and await self._rate_limited(scope, receive, send, kid)

    async def _key_of(self, scope: Scope, headers: dict[str, str]) -> tuple[str | None, bool]:
        """The request's key id (None: public path or no keys configured), and whether
        it came with a token rather than the key itself."""
        if is_public(scope["path"]) or not await self.state.keys.enabled():
            return None, False
        query = scope.get("query_string", b"")
        if key_in_first_message(scope) and credentials(headers, query) == (None, None):
            # ElevenLabs clients may send the key in their first message instead: the
            # session checks it there (and refuses the connection without one).
            scope.setdefault("state", {})["key_pending"] = True
            return None, False
        return await self._authenticate(headers, query)

    async def _rate_limited(self, scope: Scope, receive: Receive, send: Send, kid: str) -> bool:
        """Answers 429 (and returns True) when the key is over its request rate (503 when
        the store that counts it does not answer)."""
        refused = await admission.request_rate(self.state, kid)
        if refused is None:
            return False
        over = refused.http_status == 429
        self.state.metrics.errors.labels("rate_limited" if over else refused.code).inc()
        resp = error_response(
            refused.http_status,
            refused.message,
            "rate_limit_error" if over else "server_error",
            code=refused.limit or refused.code,
            headers=None
            if refused.retry_after_s is None
            else {"Retry-After": str(refused.retry_after_s)},
        )
        await resp(scope, receive, send)
        return True

    async def _call_with_body(
        self, scope: Scope, receive: Receive, send: Send, body: _Body
    ) -> None:
        """Runs the app on an HTTP request, answering a body found too large as it is read."""
        try:
            await self.app(scope, receive, send)
        except BodyTooLarge as exc:
            if body.started:  # no route reads its body after answering; nothing to say
                raise
            await self._too_large(scope, receive, send, exc)
        except ClientDisconnect:
            # The client went away before its body was in: nobody to answer. Not an error.
            log.info(
                "client_disconnected",
                path=scope["path"],
                method=scope["method"],
                received_bytes=body.received,
            )

    def _origin_refusal(self, kind: str, path: str, headers: dict[str, str]) -> AuthError | None:
        origin, host = headers.get("origin"), headers.get("host")
        if kind == "websocket":
            if origin_allowed(origin, host, self.state.allowed_origins, self.known_hosts):
                return None
            if (
                origin is not None
                and host is not None
                and origin.lower().partition("://")[2].rstrip("/") == host.lower()
            ):
                return AuthError(
                    403,
                    "origin_not_allowed",
                    f"WebSocket from origin {origin!r}: its host {host!r} is not a name "
                    "this server is known by (an IP address, localhost, host, or "
                    "allowed_hosts), so the page does not count as the server's own; add "
                    "the name to allowed_hosts or the origin to allowed_origins",
                )
            return AuthError(
                403,
                "origin_not_allowed",
                f"WebSocket from origin {origin!r} is not allowed; the server accepts "
                "its own origin and those in allowed_origins",
            )
        # HTTP: a browser whose page claims the same origin as an unknown Host is what
        # DNS rebinding looks like (cross-origin pages are CORS's to judge).
        if (
            origin is None
            or is_public(path)
            or "*" in self.http_origins
            or origin.rstrip("/") in self.http_origins
            or host is None
            or origin.lower().partition("://")[2].rstrip("/") != host.lower()
            or host_is_known(host, self.known_hosts)
        ):
            return None
        return AuthError(
            403,
            "host_not_allowed",
            f"the Host {host!r} is not a name this server is known by (an IP address, "
            "localhost, host, or allowed_hosts), and the page's origin is not in "
            "allowed_origins or cors_origins",
        )

    async def _too_large(
        self, scope: Scope, receive: Receive, send: Send, exc: BodyTooLarge
    ) -> None:
        self.state.metrics.errors.labels("body_too_large").inc()
        log.info(
            "body_too_large",
            path=scope["path"],
            limit=exc.limit,
            size=exc.size,
            declared=exc.declared,
        )
        resp = error_response(
            413,
            exc.message(),
            param=None,
            code="body_too_large",
            headers={"Connection": "close"},
        )
        await resp(scope, receive, send)

    async def _authenticate(self, headers: dict[str, str], query: bytes) -> tuple[str, bool]:
        key, token = credentials(headers, query)
        if key is not None:
            kid = await authenticate_key(self.state, key)
            if kid is not None:
                return kid, False
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
            "an API key is required: send 'Authorization: Bearer <key>' (or the "
            "dialect's own header: xi-api-key, 'Authorization: Token <key>', X-API-Key), "
            "or ?token= from POST /v1/tokens",
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
    # 86400: the largest token_max_ttl_s; a node's own setting may be lower (then 400)
    ttl_s: (
        Annotated[
            float,
            msgspec.Meta(
                ge=1,
                le=86400,
                description="Life of the token, seconds (default and at most the node's "
                "token_max_ttl_s).",
            ),
        ]
        | None
    ) = None


class TokenResponse(msgspec.Struct, kw_only=True):
    token: str
    expires_at: float
    expires_in: float


async def mint_token(request: Request) -> Response:
    state: AppState = request.app.state.voxwire
    try:
        enabled = await state.keys.enabled()
    except AuthError as exc:  # access rules lost since the middleware looked
        return error_response(exc.status, exc.message, _ERROR_TYPE[exc.status], code=exc.code)
    if not enabled:
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
        return error_response(400, f"bad token request: {exc}", param=param_of(str(exc)))
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
