"""Small HTTP/1.1 servers on raw trio sockets, so they can misbehave on purpose.

A `Server` accepts connections on 127.0.0.1 and runs a handler per
connection; the handler reads requests with `ServerConn.read_request` and
writes whatever bytes the test wants (good responses, truncated ones, resets).
The server counts connections, the most open at once, and the requests it
saw, so tests can check pooling from the other side of the socket.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, NamedTuple

import trio

if TYPE_CHECKING:
    import ssl

Handler = Callable[["ServerConn"], Awaitable[None]]


class Request(NamedTuple):
    method: str
    target: str
    headers: dict[str, str]
    head: bytes
    body: bytes


def response(
    status: int = 200,
    body: bytes = b"",
    headers: Iterable[tuple[str, str]] = (),
    *,
    reason: str = "OK",
    version: str = "1.1",
    length: bool = True,
) -> bytes:
    """An HTTP/1.x response; ``content-length`` is added unless ``length=False``."""
    lines = [f"HTTP/{version} {status} {reason}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(status: int, parts: Iterable[bytes], headers: Iterable[tuple[str, str]] = ()) -> bytes:
    head = response(status, headers=[*headers, ("Transfer-Encoding", "chunked")], length=False)
    return head + b"".join(chunk(p) for p in parts) + b"0\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class ServerConn:
    """One accepted connection, from the server's side."""

    def __init__(self, stream: trio.abc.Stream, index: int, server: Server) -> None:
        self.stream = stream
        self.index = index
        self.server = server
        self._buffer = bytearray()
        self.saw_eof = trio.Event()
        self.closed = trio.Event()

    async def _fill(self) -> bool:
        data = await self.stream.receive_some(65536)
        if not data:
            self.saw_eof.set()
            return False
        self._buffer += data
        return True

    async def read_request(self) -> Request | None:
        """The next request, or None when the client closed the connection."""
        while b"\r\n\r\n" not in self._buffer:
            if not await self._fill():
                if self._buffer:
                    raise AssertionError(f"client closed mid-head: {bytes(self._buffer)!r}")
                return None
        end = self._buffer.index(b"\r\n\r\n") + 4
        head = bytes(self._buffer[:end])
        del self._buffer[:end]
        request_line, *header_lines = head[:-4].decode("ascii").split("\r\n")
        method, target, version = request_line.split(" ")
        assert version == "HTTP/1.1", request_line
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            assert name, line
            assert name == name.strip(), line
            headers[name.lower()] = value.strip()
        assert "transfer-encoding" not in headers
        length = int(headers.get("content-length", "0"))
        while len(self._buffer) < length:
            if not await self._fill():
                raise AssertionError("client closed mid-body")
        body = bytes(self._buffer[:length])
        del self._buffer[:length]
        request = Request(method, target, headers, head, body)
        self.server.requests.append(request)
        return request

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def wait_eof(self) -> None:
        """Read (and drop) whatever comes until the client closes its side."""
        while await self._fill():
            self._buffer.clear()

    def reset(self) -> None:
        """Close with an RST (SO_LINGER 0) instead of a FIN."""
        sock = _raw_socket(self.stream)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


def _raw_socket(stream: trio.abc.Stream) -> trio.socket.SocketType:
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    assert isinstance(stream, trio.SocketStream)
    return stream.socket


class Server:
    """Runs ``handler`` for each accepted connection and records what it saw."""

    def __init__(self, handler: Handler, tls: bool) -> None:
        self.handler = handler
        self.tls = tls
        self.port = 0
        self.connections: list[ServerConn] = []
        self.requests: list[Request] = []
        self.open_now = 0
        self.max_open = 0
        self.errors: list[BaseException] = []

    def url(self, path: str = "/") -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def handle(self, stream: trio.abc.Stream) -> None:
        conn = ServerConn(stream, len(self.connections), self)
        self.connections.append(conn)
        self.open_now += 1
        self.max_open = max(self.max_open, self.open_now)
        try:
            await self.handler(conn)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            # The client went away (or the TLS handshake failed): tests judge
            # that from the client side; keep it for the ones that look.
            self.errors.append(exc)
            conn.saw_eof.set()
        finally:
            self.open_now -= 1
            await trio.aclose_forcefully(stream)
            conn.closed.set()


async def start_server(
    nursery: trio.Nursery, handler: Handler, *, ssl_context: ssl.SSLContext | None = None
) -> Server:
    """Serve ``handler`` on 127.0.0.1 (an ephemeral port) inside ``nursery``."""
    server = Server(handler, tls=ssl_context is not None)
    if ssl_context is not None:
        serve = partial(
            trio.serve_ssl_over_tcp,
            server.handle,
            0,
            ssl_context,
            host="127.0.0.1",
            https_compatible=True,
        )
        listeners = await nursery.start(serve)
        server.port = listeners[0].transport_listener.socket.getsockname()[1]
    else:
        listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
        server.port = listeners[0].socket.getsockname()[1]
    return server


def fixed(data: bytes) -> Handler:
    """A handler that answers every request on a connection with ``data``."""

    async def handler(conn: ServerConn) -> None:
        while await conn.read_request() is not None:
            await conn.send(data)

    return handler
