"""uvicorn's wsproto WebSocket protocol, with one fix.

We run uvicorn's wsproto backend because it honours transport flow control
(``send()`` waits while the socket is backed up). wsproto reports a peer's
protocol violation found while decoding, such as a text message that is not
UTF-8, as a ``CloseConnection`` event (code 1007) while the connection is still
open; uvicorn then drops the TCP connection without sending a close frame, so
the client sees 1006 instead of the code that says what it did wrong. Here that
close frame is sent first.

It also caps the kernel's send buffer per connection. Linux grows a socket's
send buffer up to ``net.ipv4.tcp_wmem`` (4 MiB by default): for a client that
stops reading, that is minutes of audio held by the kernel, out of reach of the
session's own bound on unsent audio.
"""

from __future__ import annotations

import asyncio
import fcntl
import socket
import struct
import termios

from uvicorn.protocols.websockets.wsproto_impl import WSProtocol
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Request

# The scope extension through which a session sees how much it has sent that the
# client's TCP has not taken yet (asyncio's buffer plus the kernel's send queue).
UNSENT_BYTES = "voxwire.unsent_bytes"


class VoxwireWSProtocol(WSProtocol):
    send_buffer_bytes = 0  # 0 leaves the kernel's autotuning alone
    _fd = -1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self._fd = sock.fileno()
            if self.send_buffer_bytes:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer_bytes)
        super().connection_made(transport)  # type: ignore[arg-type]

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        self.scope["extensions"][UNSENT_BYTES] = self.unsent_bytes  # type: ignore[assignment]

    def unsent_bytes(self) -> int:
        """Bytes written and not yet acknowledged by the peer's TCP: a client that stops
        reading fills the kernel's send queue long before ``send()`` waits (SIOCOUTQ
        counts unsent and unacknowledged bytes, tcp(7))."""
        n = self.transport.get_write_buffer_size()
        if self._fd >= 0:
            try:
                out = fcntl.ioctl(self._fd, termios.TIOCOUTQ, b"\0\0\0\0")
                n += struct.unpack("i", out)[0]
            except OSError:
                pass  # closed
        return n

    def handle_close(self, event: CloseConnection) -> None:
        if not self.close_sent and self.conn.state == ConnectionState.OPEN:
            self.close_sent = True
            self.queue.put_nowait(
                {"type": "websocket.disconnect", "code": event.code, "reason": event.reason}
            )
            self.transport.write(
                self.conn.send(CloseConnection(code=event.code, reason=event.reason))
            )
            self.transport.close()
            return
        super().handle_close(event)


def ws_protocol(send_buffer_bytes: int) -> type[VoxwireWSProtocol]:
    """The protocol class for uvicorn, with this server's socket send buffer."""
    return type("VoxwireWSProtocol", (VoxwireWSProtocol,), {"send_buffer_bytes": send_buffer_bytes})
