"""A small HTTP proxy for the tests: CONNECT tunnels and absolute-form forwarding, loopback only.

It counts what it did (``tunnels``, ``forwarded``), can require Basic
credentials (``auth``) and can refuse tunnels with a chosen status
(``refuse_with``). It only ever connects to 127.0.0.1: any other target gets
a 403, so a test that routes wrongly cannot reach the outside world.
"""

from __future__ import annotations

import base64
from functools import partial
from urllib.parse import urlsplit

import trio

__all__ = ["TestProxy", "start_proxy"]

_REASONS = {
    200: "Connection established",
    403: "Forbidden",
    407: "Proxy Authentication Required",
    502: "Bad Gateway",
}


class TestProxy:
    __test__ = False  # not a pytest test class

    def __init__(self, auth: tuple[str, str] | None = None) -> None:
        self.auth = auth
        self.port = 0
        self.refuse_with: int | None = None
        self.connections = 0
        self.tunnels: list[str] = []
        """``host:port`` of every tunnel opened."""
        self.forwarded: list[str] = []
        """The absolute-form target of each forwarded connection's first request."""
        self.refused: list[tuple[str, int]] = []
        self.authorizations: list[str | None] = []

    def url(self, credentials: str = "") -> str:
        at = f"{credentials}@" if credentials else ""
        return f"http://{at}127.0.0.1:{self.port}"

    async def handle(self, client: trio.SocketStream) -> None:
        self.connections += 1
        buffer = bytearray()
        try:
            while b"\r\n\r\n" not in buffer:
                data = await client.receive_some(65536)
                if not data:
                    return
                buffer += data
            end = buffer.index(b"\r\n\r\n") + 4
            head = bytes(buffer[:end]).decode("latin-1")
            rest = bytes(buffer[end:])
            request_line, *lines = head[:-4].split("\r\n")
            method, target, _version = request_line.split(" ")
            headers = {}
            for line in lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            authorization = headers.get("proxy-authorization")
            self.authorizations.append(authorization)
            if self.auth is not None:
                expected = "Basic " + base64.b64encode(":".join(self.auth).encode()).decode()
                if authorization != expected:
                    await self._refuse(client, target, 407)
                    return
            if method == "CONNECT":
                await self._tunnel(client, target, rest)
            else:
                await self._forward(client, method, target, lines, rest)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(client)

    async def _refuse(self, client: trio.SocketStream, target: str, status: int) -> None:
        self.refused.append((target, status))
        extra = 'Proxy-Authenticate: Basic realm="test"\r\n' if status == 407 else ""
        await client.send_all(
            f"HTTP/1.1 {status} {_REASONS[status]}\r\n{extra}"
            f"Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )

    async def _open(self, host: str, port: int) -> trio.SocketStream | None:
        if host != "127.0.0.1":
            return None
        try:
            return await trio.open_tcp_stream(host, port)
        except OSError:
            return None

    async def _tunnel(self, client: trio.SocketStream, target: str, rest: bytes) -> None:
        host, _, port = target.rpartition(":")
        if self.refuse_with is not None:
            await self._refuse(client, target, self.refuse_with)
            return
        if host != "127.0.0.1":
            await self._refuse(client, target, 403)
            return
        upstream = await self._open(host, int(port))
        if upstream is None:
            await self._refuse(client, target, 502)
            return
        self.tunnels.append(target)
        await client.send_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await _splice(client, upstream, rest)

    async def _forward(
        self, client: trio.SocketStream, method: str, target: str, lines: list[str], rest: bytes
    ) -> None:
        parts = urlsplit(target)
        if parts.scheme != "http" or parts.hostname is None:
            await self._refuse(client, target, 403)
            return
        if self.refuse_with is not None:
            await self._refuse(client, target, self.refuse_with)
            return
        upstream = await self._open(parts.hostname, parts.port or 80)
        if upstream is None:
            await self._refuse(client, target, 502)
            return
        self.forwarded.append(target)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        kept = [line for line in lines if not line.lower().startswith("proxy-authorization:")]
        head = "\r\n".join([f"{method} {path} HTTP/1.1", *kept]) + "\r\n\r\n"
        await _splice(client, upstream, head.encode("latin-1") + rest)


async def _splice(client: trio.SocketStream, upstream: trio.SocketStream, first: bytes) -> None:
    """Copy bytes both ways until either side closes; then close both."""
    try:
        if first:
            await upstream.send_all(first)
        async with trio.open_nursery() as nursery:

            async def copy(source: trio.SocketStream, sink: trio.SocketStream) -> None:
                try:
                    while data := await source.receive_some(65536):
                        await sink.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(copy, client, upstream)
            nursery.start_soon(copy, upstream, client)
    finally:
        await trio.aclose_forcefully(upstream)


async def start_proxy(nursery: trio.Nursery, proxy: TestProxy) -> TestProxy:
    listeners = await nursery.start(partial(trio.serve_tcp, proxy.handle, 0, host="127.0.0.1"))
    proxy.port = listeners[0].socket.getsockname()[1]
    return proxy
