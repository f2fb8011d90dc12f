"""uvicorn's h11 HTTP protocol, with a deadline on reading a request's head.

uvicorn has no limit on how long a client may take to send its request line and
headers: a client that opens connections and sends a few bytes of a request, then
nothing (slowloris), holds each socket forever. Here a connection waiting for a
request head gets ``header_timeout_s``: from when it is opened, and on a keep-alive
connection from the first byte of its next request (an idle keep-alive connection
is uvicorn's ``timeout_keep_alive``'s to close). Past the deadline a client that
sent part of a head gets ``408 Request Timeout``, and the connection is closed.

The deadline ends once the head is in: a request body, a streamed response and a
WebSocket (which takes the connection over from this protocol) are not timed here.
"""

from __future__ import annotations

import asyncio

import h11
import structlog
from uvicorn.protocols.http.h11_impl import H11Protocol

log = structlog.get_logger("voxwire.http")


class VoxwireHTTPProtocol(H11Protocol):
    header_timeout_s = 10.0

    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            self._disarm_header_timer()  # closed, or upgraded to a WebSocket
        elif self.conn.their_state is h11.IDLE:
            # Between requests: a partial head keeps (or starts) the deadline. uvicorn
            # unset its keep-alive timer on these bytes, so without it nothing would
            # ever close this connection.
            if self.conn.trailing_data[0]:
                self._arm_header_timer()
        else:  # the head is in (the request is being served)
            self._disarm_header_timer()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._disarm_header_timer()  # the WebSocket protocol owns the connection now
        super().handle_websocket_upgrade(event)

    def _arm_header_timer(self) -> None:
        if self._header_timer is None and self.header_timeout_s > 0:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        transport = self.transport
        if transport.is_closing() or transport.get_protocol() is not self:
            return
        if self.conn.their_state is not h11.IDLE:
            return  # a request is being served (should not happen: the timer is disarmed)
        partial = len(self.conn.trailing_data[0])
        log.info(
            "http_header_timeout",
            client=f"{self.client[0]}:{self.client[1]}" if self.client else None,
            received_bytes=partial,
            header_timeout_s=self.header_timeout_s,
        )
        if partial and self.conn.our_state is h11.IDLE:
            msg = (
                f"the request head was not received within {self.header_timeout_s:g} s "
                "(setting header_timeout_s)\n"
            ).encode()
            transport.write(
                b"HTTP/1.1 408 Request Timeout\r\n"
                b"content-type: text/plain; charset=utf-8\r\n"
                b"connection: close\r\n"
                b"content-length: " + str(len(msg)).encode() + b"\r\n\r\n" + msg
            )
        transport.close()


def http_protocol(header_timeout_s: float) -> type[VoxwireHTTPProtocol]:
    """The HTTP protocol class for uvicorn (``http=``), with this server's deadline."""
    return type(
        "VoxwireHTTPProtocol", (VoxwireHTTPProtocol,), {"header_timeout_s": header_timeout_s}
    )
