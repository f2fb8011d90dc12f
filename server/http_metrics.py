"""HTTP metrics: a pure ASGI middleware, outermost, that counts every request (those the
access rules refuse too) by route, method, status and protocol, and times it to the last
byte of its response, without holding any of the body back. WebSockets pass through
untouched: their sessions have metrics of their own (server/metrics.py).

Labels stay bounded whatever clients send: ``route`` is the matched route's path
template (``/v1/voices/{voice_id}``; a mount's ``/docs/{path}``; ``unmatched`` for a
404), never the raw path; ``method`` is one of the methods the API knows or ``other``;
``protocol`` is the API family, from the path's first segments:

- ``openai``: ``/v1/audio/speech``, ``/v1/models``;
- ``voices``: ``/v1/voices…``; ``engines``: ``/v1/engines``; ``tokens``: ``/v1/tokens``;
- ``health``: ``/health``; ``metrics``: ``/metrics``;
- ``pages``: ``/``, ``/demo…``, ``/docs…``, ``/openapi.json``;
- ``other``: anything else.

A route that streams audio (speech, voice previews) calls ``count_audio`` once its body
is done; the request it belongs to is found through a context variable, so the route
needs no handle on the middleware.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field

from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.metrics import Metrics

_PATHS = {
    "/v1/audio/speech": "openai",
    "/v1/models": "openai",
    "/v1/voices": "voices",
    "/v1/engines": "engines",
    "/v1/tokens": "tokens",
    "/health": "health",
    "/metrics": "metrics",
    "/": "pages",
    "/demo": "pages",
    "/docs": "pages",
    "/openapi.json": "pages",
}
_PREFIXES = (("/v1/voices/", "voices"), ("/demo/", "pages"), ("/docs/", "pages"))
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"


def protocol_of(path: str) -> str:
    """The API family of a request path (see the module's docstring)."""
    protocol = _PATHS.get(path)
    if protocol is not None:
        return protocol
    return next((p for prefix, p in _PREFIXES if path.startswith(prefix)), "other")


def route_of(scope: Scope) -> str:
    """The path template of the route that served (or would serve) the request."""
    route = scope.get("route")
    if route is None:  # answered before routing (refused by the access rules, CORS)
        router = getattr(scope.get("app"), "router", None)
        route = next(
            (r for r in getattr(router, "routes", ()) if r.matches(scope)[0] is not Match.NONE),
            None,
        )
    return _template(route) if isinstance(route, BaseRoute) else UNMATCHED


def _template(route: BaseRoute) -> str:
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return UNMATCHED
    return f"{path}/{{path}}" if isinstance(route, Mount) else path


@dataclass(slots=True)
class _Exchange:
    """One request in flight, as the middleware follows it."""

    scope: Scope
    metrics: Metrics
    protocol: str
    t0: float = field(default_factory=time.perf_counter)
    status: int = 0
    route: str = ""  # known once the request has been routed
    nbytes: int = 0
    first_byte: bool = False
    done: bool = False

    def route_label(self) -> str:
        if not self.route:
            self.route = route_of(self.scope)
        return self.route

    def sent(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = int(message["status"])
        elif kind == "http.response.body":
            n = len(message.get("body", b""))
            self.nbytes += n
            if n and not self.first_byte:
                self.first_byte = True
                elapsed = time.perf_counter() - self.t0
                self.metrics.http_first_byte.labels(self.route_label()).observe(elapsed)
            if not message.get("more_body", False):
                self.finish()

    def finish(self) -> None:
        """The response's last byte is out (or it will never be): count the request."""
        if self.done:
            return
        self.done = True
        m, route = self.metrics, self.route_label()
        method = str(self.scope.get("method", ""))
        status = str(self.status or 500)  # no response started: the server's error page
        m.http_requests.labels(
            route, method if method in _METHODS else "other", status, self.protocol
        ).inc()
        m.http_duration.labels(route).observe(time.perf_counter() - self.t0)
        if self.nbytes:
            m.http_bytes.labels(route).inc(self.nbytes)
        m.http_in_progress.labels(self.protocol).dec()


_current: ContextVar[_Exchange | None] = ContextVar("voxwire_http_exchange", default=None)


def count_audio(seconds: float) -> None:
    """Credit ``seconds`` of audio to the HTTP request being answered (none: a no-op)."""
    exchange = _current.get()
    if exchange is not None and seconds > 0:
        exchange.metrics.http_audio_seconds.labels(exchange.route_label()).inc(seconds)


class HttpMetrics:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(scope, self.metrics, protocol_of(scope["path"]))
        self.metrics.http_in_progress.labels(exchange.protocol).inc()
        token = _current.set(exchange)

        async def measured_send(message: Message) -> None:
            await send(message)
            exchange.sent(message)

        try:
            await self.app(scope, receive, measured_send)
        finally:
            _current.reset(token)
            exchange.finish()  # (a no-op after the last byte; else an error or a disconnect)
