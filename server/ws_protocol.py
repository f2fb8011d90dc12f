"""uvicorn's wsproto WebSocket protocol, with one fix.

We run uvicorn's wsproto backend because it honours transport flow control
(``send()`` waits while the socket is backed up). wsproto reports a peer's
protocol violation found while decoding, such as a text message that is not
UTF-8, as a ``CloseConnection`` event (code 1007) while the connection is still
open; uvicorn then drops the TCP connection without sending a close frame, so
the client sees 1006 instead of the code that says what it did wrong. Here that
close frame is sent first.

It also offers the application a way to send several binary messages in one write
(``SEND_FRAMES``), and caps the kernel's send buffer per connection. Linux grows a socket's
send buffer up to ``net.ipv4.tcp_wmem`` (4 MiB by default): for a client that
stops reading, that is minutes of audio held by the kernel, out of reach of the
session's own bound on unsent audio.

Why frames are framed here and not by wsproto: a session's audio leaves in bursts of
20 ms frames (five per 100 ms slice), and each ASGI ``websocket.send`` costs Starlette's
and uvicorn's per-message Python, wsproto's frame builder and one ``send()`` system
call: about half of the event loop's time at capacity (BENCHMARKS.md, "Where the CPU
goes"). wsproto has no call for several messages at once. An unmasked, unfragmented
server data frame is a 2-10 byte header before the payload (RFC 6455 §5.2), so a burst
is one header per frame and one ``transport.write``. It is used only where wsproto
would write the same bytes: no extension negotiated (per-message deflate is off) and
the connection open.
"""

from __future__ import annotations

import asyncio
import fcntl
import socket
import struct
import termios
from collections.abc import Sequence

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.wsproto_impl import WSProtocol
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Request

# The scope extension through which a session sees how much it has sent that the
# client's TCP has not taken yet (asyncio's buffer plus the kernel's send queue).
UNSENT_BYTES = "voxwire.unsent_bytes"
# The scope extension that sends several binary messages in one write (or None when
# the connection negotiated an extension that changes framing).
SEND_FRAMES = "voxwire.send_frames"

_BINARY_FIN = 0x82  # FIN + opcode 2 (binary), RFC 6455 §5.2
_LEN16 = struct.Struct("!BBH")
_LEN64 = struct.Struct("!BBQ")


def binary_frames(payloads: Sequence[bytes]) -> bytes:
    """The wire bytes of unmasked, unfragmented binary messages (a server's frames)."""
    parts: list[bytes] = []
    for data in payloads:
        n = len(data)
        if n < 126:
            parts.append(bytes((_BINARY_FIN, n)))
        elif n < 65536:
            parts.append(_LEN16.pack(_BINARY_FIN, 126, n))
        else:
            parts.append(_LEN64.pack(_BINARY_FIN, 127, n))
        parts.append(data)
    return b"".join(parts)


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
        if not self.config.ws_per_message_deflate:
            self.scope["extensions"][SEND_FRAMES] = self.send_frames  # type: ignore[assignment]

    async def send_frames(self, payloads: Sequence[bytes]) -> None:
        """Send binary messages in one write, waiting like ``send`` while the transport
        is paused (flow control); ClientDisconnected once the connection is not open."""
        await self.writable.wait()
        if (
            self.disconnected
            or self.close_sent
            or not self.handshake_complete
            or self.conn.state != ConnectionState.OPEN
        ):
            raise ClientDisconnected()
        if not self.transport.is_closing():
            self.transport.write(binary_frames(payloads))

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
