"""The default transport: HTTP/1.1 over trio sockets, httptools parsing, a keep-alive pool.

Why not httpx here: its client layer alone costs ~440 µs per request and its
pool degrades with concurrency (``reference/transport-experiments.md``). This
transport does one exchange in ~150 µs of CPU, flat in concurrency, by doing
only what an LLM API call needs:

* one write of head and body (``os.write`` on the socket for plain TCP, see
  `_Connection`); one parser and one small callback object per exchange; no
  task, no cancel scope and no semaphore per request unless a read/write
  timeout is configured (the provider actor already bounds every attempt with
  one cancel scope);
* an O(1) pool per origin (`OriginPool`) with a connection cap and FIFO waiting;
* TLS through `trio.SSLStream`, verified by default.

An idle pooled connection is checked (one non-blocking ``poll``) before it
carries a request; one the server has closed is replaced by a fresh one. If a
*reused* connection still turns out dead, the request goes out once more on a
fresh connection only when the server cannot have acted on it: the send itself
failed, or the method is idempotent. A POST whose bytes were all written is
never replayed (a completion could be billed twice): like a connection that
dies after response bytes arrived, or a fresh connection that fails, it raises
`ReadError`/`WriteError` and the balancer's retry policy decides.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import os
import select
import ssl
from typing import TYPE_CHECKING, Literal

import httptools
import trio

from ._base import (
    ConnectError,
    ConnectTimeout,
    HTTPRequest,
    HTTPResponse,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    ResponseTooLarge,
    TransportError,
    TransportLimits,
    WriteError,
    WriteTimeout,
)
from ._http11 import ResponseReader, Target, encode_head, parse_url
from ._pool import OriginPool

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["TrioTransport"]

log = logging.getLogger("llmlb_actors.transport")

_RECEIVE_BYTES = 65536
#: Head and body go out in one ``send_all`` (one syscall) up to this size;
#: beyond it the concatenation copy costs more than a second send.
_COALESCE_BYTES = 65536

_Phase = Literal["connect", "write", "read"]

#: Plain TCP goes through ``os.read``/``os.write`` (see `_Connection`); not on Windows.
_RAW_IO = os.name == "posix"

#: Everything a socket, TLS or parser operation may raise; `_translate` maps each.
_IO_ERRORS: tuple[type[BaseException], ...] = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
    OSError,  # includes ssl.SSLError and socket.gaierror
    httptools.HttpParserError,
    httptools.HttpParserUpgrade,
)


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    cause = exc.__cause__
    if cause is not None and cause is not exc:
        text = f"{text} ({_describe(cause)})"
    return text


def _translate(exc: BaseException, phase: _Phase, label: str) -> TransportError:
    """The one place lower-layer exceptions become `TransportError`s.

    ``label`` is the origin only; URLs may carry keys and are never included.
    """
    detail = f"{label}: {_describe(exc)}"
    if isinstance(exc, trio.TooSlowError):
        return {"connect": ConnectTimeout, "write": WriteTimeout, "read": ReadTimeout}[phase](
            detail
        )
    if isinstance(exc, httptools.HttpParserError | httptools.HttpParserUpgrade):
        return RemoteProtocolError(detail)
    if phase == "connect":
        return ConnectError(detail)
    if phase == "write":
        return WriteError(detail)
    return ReadError(detail)


_IDEMPOTENT_PREFIXES = (b"GET ", b"HEAD ", b"OPTIONS ", b"PUT ", b"DELETE ")


def head_only_or_idempotent(head: bytes) -> bool:
    """Whether the request (its encoded head) uses an idempotent method."""
    return head.startswith(_IDEMPOTENT_PREFIXES)


def _closed_by_peer(conn: _Connection) -> bool:
    """A cheap non-blocking look at an idle pooled socket.

    An idle HTTP/1.1 connection has nothing to read; if it is readable, the server
    sent EOF, a reset or stray bytes, and it must not carry a request.
    """
    try:
        fd = conn.socket.fileno()
        if _poll is None:
            readable, _, _ = select.select([fd], [], [], 0)
            return bool(readable)
        poller = _poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


# poll(), not select(): select() refuses descriptors >= FD_SETSIZE (1024) with a
# ValueError, which made every pooled connection past the 1024th look dead (at
# 2,048 in flight, a third of all requests opened a new connection). Windows has
# no poll(), and its select() has no such limit on descriptor values.
_poll = getattr(select, "poll", None)


def _happy_eyeballs(host: str) -> float | None:
    """No connection racing for an IP literal: it has one address, and each connect's
    racing timer (which fires whenever a connect takes over 0.25 s, as under a burst)
    costs ~8 % of a cold connection's CPU."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return 0.25  # trio's default: race IPv6/IPv4 addresses of a name
    return None


class _StaleConnection(Exception):
    """A reused connection was closed by the server before it answered. Internal."""


class _Connection:
    """One open HTTP/1.1 connection. Strictly private.

    A plain-TCP connection on POSIX is read and written with ``os.read`` and
    ``os.write`` on its descriptor, waiting with `trio.lowlevel.wait_readable`
    / ``wait_writable`` only when the socket would block. trio's own socket
    methods wrap each call in a cancellation check, a forced scheduler pass and
    three nested coroutines: at 2,048 in flight that machinery (and the garbage
    collector walking it while it waits) cost more than the HTTP exchange. TLS
    connections, and Windows (no ``os.read`` on sockets), use the trio stream.
    """

    __slots__ = ("fd", "idle_since", "reader", "reused", "socket", "stream")

    def __init__(self, stream: trio.abc.Stream, socket: trio.socket.SocketType) -> None:
        self.stream = stream
        self.socket = socket
        # The connection's parser, kept across responses: a connection goes back to
        # the pool only after a complete keep-alive response, when llhttp is ready
        # for the next message. A parser and its reader are seven objects the garbage
        # collector would otherwise meet on every request.
        self.reader: ResponseReader | None = None
        self.fd: int | None = socket.fileno() if _RAW_IO else None
        self.idle_since = 0.0
        self.reused = False

    def use_tls(self, stream: trio.SSLStream[trio.SocketStream]) -> None:
        self.stream = stream
        self.fd = None

    async def send_all(self, data: bytes) -> None:
        fd = self.fd
        if fd is None:
            await self.stream.send_all(data)
            return
        # Never write once the attempt is cancelled: a request sent after its
        # caller gave up could still be billed.
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            sent = os.write(fd, data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return
        view = memoryview(data)
        while sent < len(view):
            await trio.lowlevel.wait_writable(fd)
            with contextlib.suppress(BlockingIOError):  # woken spuriously: wait again
                sent += os.write(fd, view[sent:])

    async def receive_some(self, max_bytes: int) -> bytes | bytearray:
        """At most ``max_bytes``; ``b""`` at EOF. Not a checkpoint when data is waiting."""
        fd = self.fd
        if fd is None:
            return await self.stream.receive_some(max_bytes)
        while True:
            try:
                return os.read(fd, max_bytes)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(fd)

    def close(self) -> None:
        # Synchronous and final: callable from `finally` blocks under
        # cancellation. TLS close_notify is skipped, as https_compatible allows.
        # trio's close wakes a task waiting on the descriptor (ClosedResourceError).
        self.fd = None
        self.socket.close()


class _Deadlines:
    """The one cancel scope of an exchange when read/write timeouts are configured.

    Its deadline moves with the phase instead of nesting a scope around every
    socket operation (each scope costs ~15-20 µs).
    """

    __slots__ = ("phase", "read", "scope", "write")

    def __init__(self, read: float | None, write: float | None) -> None:
        self.scope = trio.CancelScope()
        self.read = read
        self.write = write
        self.phase: _Phase = "connect"

    def connecting(self) -> None:
        self.phase = "connect"
        self.scope.deadline = math.inf  # connect has its own scope

    def writing(self) -> None:
        self.phase = "write"
        self.scope.deadline = math.inf if self.write is None else trio.current_time() + self.write

    def reading(self) -> None:
        self.phase = "read"
        self.scope.deadline = math.inf if self.read is None else trio.current_time() + self.read

    def error(self, label: str) -> TransportError:
        if self.phase == "write":
            return WriteTimeout(f"{label}: no progress sending for {self.write} s")
        return ReadTimeout(f"{label}: no response bytes for {self.read} s")


class TrioTransport:
    """The default `Transport`: HTTP/1.1 over trio sockets with the httptools parser.

    One instance is shared by every provider actor of a balancer, inside one
    trio run. Connections are pooled per origin (scheme, host, port), at most
    ``limits.max_connections`` each. Redirects are returned, never followed.
    Responses are not decompressed (``accept-encoding: identity`` is sent).

    Args:
        limits: timeouts, pool size and size caps (`TransportLimits`).
        ssl_context: the context for https origins, e.g. one trusting a
            private CA. Default: `ssl.create_default_context()` with ALPN
            ``http/1.1``: certificates and host names verified.

    Raises:
        ValueError: ``max_connections`` below 1, or both ``ssl_context`` and
            ``verify_tls=False`` given (say which one you mean).
    """

    def __init__(
        self, limits: TransportLimits | None = None, *, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.limits = limits = limits or TransportLimits()
        if limits.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if ssl_context is not None and not limits.verify_tls:
            raise ValueError("pass either ssl_context or verify_tls=False, not both")
        if not limits.verify_tls:
            log.warning("TLS certificate verification is OFF for the trio transport")
        self._ssl_context = ssl_context
        self._pools: dict[tuple[str, str, int], OriginPool[_Connection]] = {}
        self._closed = False
        self._timed = limits.read_timeout is not None or limits.write_timeout is not None

    def __repr__(self) -> str:
        return f"<TrioTransport origins={len(self._pools)} closed={self._closed}>"

    # public API -----------------------------------------------------------

    async def request(self, request: HTTPRequest) -> HTTPResponse:
        """Send ``request`` and read the whole response, up to ``max_response_bytes``.

        Raises:
            ValueError: a malformed URL, method or header (nothing was sent).
            TransportError: the subclass says which phase failed.
        """
        if not self._timed:
            return await self._request(request, None)
        deadlines = _Deadlines(self.limits.read_timeout, self.limits.write_timeout)
        with deadlines.scope:
            return await self._request(request, deadlines)
        raise deadlines.error(parse_url(request.url).label)

    def stream(self, request: HTTPRequest) -> _StreamContext:
        """Send ``request``; the context yields once the response head has arrived.

        The body is read with ``aiter_bytes()`` or ``aread()``. Leaving the
        context before the body is complete (or being cancelled) closes the
        connection at once; a completely received body returns it to the pool.
        """
        return _StreamContext(self, request)

    async def aclose(self) -> None:
        """Close every pooled connection; later requests raise `TransportError`.

        Connections in use are closed when their exchange ends.
        """
        self._closed = True
        for pool in self._pools.values():
            pool.close()
        await trio.lowlevel.checkpoint()

    # the exchange ---------------------------------------------------------

    async def _request(self, request: HTTPRequest, deadlines: _Deadlines | None) -> HTTPResponse:
        target = parse_url(request.url)
        conn, reader, pool = await self._start(
            request, target, self.limits.max_response_bytes, deadlines
        )
        try:
            while not reader.complete:
                await self._receive(conn, reader, target.label, deadlines)
        except BaseException:
            conn.close()
            pool.discard()
            raise
        chunks = reader.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._finish(pool, conn, reader)
        return HTTPResponse(reader.status, reader.headers, body)

    def _pool(self, target: Target) -> OriginPool[_Connection]:
        pool = self._pools.get(target.origin)
        if pool is None:
            if self._closed:
                raise TransportError("transport is closed")
            pool = self._pools[target.origin] = OriginPool(self.limits.max_connections)
        return pool

    async def _start(
        self,
        request: HTTPRequest,
        target: Target,
        limit: int | None,
        deadlines: _Deadlines | None,
    ) -> tuple[_Connection, ResponseReader, OriginPool[_Connection]]:
        """Check out a connection, send the request, read the response head.

        On return the caller owns the connection's slot; on an exception the
        slot has been given back and the connection closed.
        """
        body = request.body
        head = encode_head(request.method, target, request.headers, body)
        if body:
            if len(body) <= _COALESCE_BYTES:
                head += body
                body = None
        else:
            body = None
        head_only = request.method == "HEAD"
        pool = self._pool(target)
        conn = await pool.acquire(trio.current_time(), self.limits.pool_timeout)
        if conn is not None and _closed_by_peer(conn):
            # The server hung up while it sat idle: replace it before sending anything.
            conn.close()
            conn = None
        try:
            if conn is None:
                conn = await self._connect(target, deadlines)
            try:
                reader = await self._exchange_head(
                    conn, target, head, body, head_only, limit, deadlines
                )
            except _StaleConnection:
                # The slot stays ours; the fresh connection takes it over.
                conn = await self._connect(target, deadlines)
                reader = await self._exchange_head(
                    conn, target, head, body, head_only, limit, deadlines
                )
        except BaseException:
            if conn is not None:
                conn.close()
            pool.discard()
            raise
        return conn, reader, pool

    async def _connect(self, target: Target, deadlines: _Deadlines | None) -> _Connection:
        if deadlines is not None:
            deadlines.connecting()
        if self._closed:
            raise TransportError("transport is closed")
        conn: _Connection | None = None
        try:
            with trio.move_on_after(self.limits.connect_timeout):
                tcp = await trio.open_tcp_stream(
                    target.host, target.port, happy_eyeballs_delay=_happy_eyeballs(target.host)
                )
                conn = _Connection(tcp, tcp.socket)
                if target.tls:
                    tls = trio.SSLStream(
                        tcp, self._tls_context(), server_hostname=target.host, https_compatible=True
                    )
                    conn.use_tls(tls)
                    await tls.do_handshake()
                return conn
        except BaseException as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, _IO_ERRORS):
                raise _translate(exc, "connect", target.label) from exc
            raise
        if conn is not None:
            conn.close()
        raise ConnectTimeout(
            f"{target.label}: no connection within {self.limits.connect_timeout} s"
        )

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            context = ssl.create_default_context()
            if not self.limits.verify_tls:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            context.set_alpn_protocols(["http/1.1"])
            self._ssl_context = context
        return self._ssl_context

    async def _exchange_head(
        self,
        conn: _Connection,
        target: Target,
        head: bytes,
        body: bytes | None,
        head_only: bool,
        limit: int | None,
        deadlines: _Deadlines | None,
    ) -> ResponseReader:
        """Send the request and read until the response head is parsed.

        Raises `_StaleConnection` (only for a reused connection) when the
        server had closed it before sending any response byte.
        """
        if deadlines is not None:
            deadlines.writing()
        try:
            await conn.send_all(head)
            if body is not None:
                await conn.send_all(body)
        except _IO_ERRORS as exc:
            conn.close()
            if conn.reused and not isinstance(exc, trio.TooSlowError):
                raise _StaleConnection from exc
            raise _translate(exc, "write", target.label) from exc
        reader = conn.reader
        if reader is None or head_only:
            reader = ResponseReader(
                head_only=head_only, limit=limit, max_head=self.limits.max_header_bytes
            )
            # A HEAD leaves the parser expecting a body that never comes: never reused.
            conn.reader = None if head_only else reader
        else:
            reader.next_response(limit)
        if deadlines is not None:
            deadlines.reading()
        # The request is fully written: the server may have acted on it. Only an
        # idempotent request may go out again (a POST could be billed twice); for the
        # rest a dead connection is a retryable error and the balancer decides.
        replayable = conn.reused and head_only_or_idempotent(head)
        try:
            fd = conn.fd
            if fd is not None:
                # Nothing can have arrived yet: wait before reading, right here (this
                # wait is the longest-lived frame of an exchange; one coroutine less).
                await trio.lowlevel.wait_readable(fd)
            data = await conn.receive_some(_RECEIVE_BYTES)
        except _IO_ERRORS as exc:
            conn.close()
            if replayable:
                raise _StaleConnection from exc
            raise _translate(exc, "read", target.label) from exc
        if not data:
            conn.close()
            if replayable:
                raise _StaleConnection
            raise ReadError(f"{target.label}: server closed the connection without a response")
        try:
            reader.feed(data)
        except _IO_ERRORS as exc:
            raise _translate(exc, "read", target.label) from exc
        while not reader.headers_done:
            await self._receive(conn, reader, target.label, deadlines)
        return reader

    async def _receive(
        self,
        conn: _Connection,
        reader: ResponseReader,
        label: str,
        deadlines: _Deadlines | None,
    ) -> None:
        """Receive once and feed the parser; EOF completes an EOF-delimited body."""
        if deadlines is not None:
            deadlines.reading()
        try:
            data = await conn.receive_some(_RECEIVE_BYTES)
            if data:
                reader.feed(data)
                return
        except _IO_ERRORS as exc:
            raise _translate(exc, "read", label) from exc
        if not reader.feed_eof():
            raise ReadError(f"{label}: server closed the connection mid-response")

    def _finish(
        self, pool: OriginPool[_Connection], conn: _Connection, reader: ResponseReader
    ) -> None:
        """Return a cleanly finished connection to the pool, or close it."""
        if reader.complete and reader.keep_alive and not self._closed:
            pool.release(conn, trio.current_time())
        else:
            conn.close()
            pool.discard()


class _StreamContext:
    """What `TrioTransport.stream` returns: opens the exchange on entry."""

    __slots__ = ("_request", "_response", "_transport")

    def __init__(self, transport: TrioTransport, request: HTTPRequest) -> None:
        self._transport = transport
        self._request = request
        self._response: _StreamingResponse | None = None

    async def __aenter__(self) -> _StreamingResponse:
        transport = self._transport
        target = parse_url(self._request.url)
        if not transport._timed:
            conn, reader, pool = await transport._start(self._request, target, None, None)
        else:
            deadlines = _Deadlines(transport.limits.read_timeout, transport.limits.write_timeout)
            with deadlines.scope:
                conn, reader, pool = await transport._start(self._request, target, None, deadlines)
            if deadlines.scope.cancelled_caught:
                raise deadlines.error(target.label)
        self._response = _StreamingResponse(transport, pool, conn, reader, target.label)
        return self._response

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        response = self._response
        if response is not None:
            self._response = None
            response._close()


class _StreamingResponse:
    """A response whose body is read as it arrives. Strictly private."""

    __slots__ = (
        "_conn",
        "_failed",
        "_label",
        "_pool",
        "_reader",
        "_transport",
        "headers",
        "status",
    )

    def __init__(
        self,
        transport: TrioTransport,
        pool: OriginPool[_Connection],
        conn: _Connection,
        reader: ResponseReader,
        label: str,
    ) -> None:
        self._transport = transport
        self._pool = pool
        self._conn: _Connection | None = conn
        self._reader = reader
        self._label = label
        self._failed = False
        self.status = reader.status
        self.headers = reader.headers

    def aiter_bytes(self) -> _BodyIterator:
        """Body chunks as they arrive, de-chunked (several parsed at once come joined)."""
        return _BodyIterator(self)

    async def aread(self) -> bytes:
        """The rest of the body, up to ``max_response_bytes``.

        Raises:
            ResponseTooLarge: the rest is bigger; the connection will be closed.
        """
        limit = self._transport.limits.max_response_bytes
        parts: list[bytes] = []
        size = 0
        async for chunk in self.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise ResponseTooLarge(f"body over {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def _next_chunk(self) -> bytes | None:
        reader = self._reader
        while True:
            chunks = reader.chunks
            if chunks:
                reader.chunks = []
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
            if reader.complete:
                return None
            conn = self._conn
            if conn is None or self._failed:
                raise ReadError(f"{self._label}: the response stream is closed")
            try:
                await self._receive_one(conn, reader)
            except BaseException:
                # Leave the socket for `_close` (which closes it: the body is
                # incomplete), but never read from it again.
                self._failed = True
                raise

    async def _receive_one(self, conn: _Connection, reader: ResponseReader) -> None:
        transport = self._transport
        read_timeout = transport.limits.read_timeout
        if read_timeout is None:
            await transport._receive(conn, reader, self._label, None)
            return
        # A stream's reads happen in the caller's iterations, so no scope can
        # span them: one scope per receive, only when a read timeout is set.
        with trio.move_on_after(read_timeout) as scope:
            await transport._receive(conn, reader, self._label, None)
        if scope.cancelled_caught:
            raise ReadTimeout(f"{self._label}: no response bytes for {read_timeout} s")

    def _close(self) -> None:
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        if self._failed:
            conn.close()
            self._pool.discard()
        else:
            self._transport._finish(self._pool, conn, self._reader)


class _BodyIterator:
    """``aiter_bytes()``: a plain iterator, not an async generator, so an
    abandoned iteration leaves nothing for the garbage collector to finalize
    (the socket is owned by the stream context)."""

    __slots__ = ("_response",)

    def __init__(self, response: _StreamingResponse) -> None:
        self._response = response

    def __aiter__(self) -> _BodyIterator:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._response._next_chunk()
        if chunk is None:
            raise StopAsyncIteration
        return chunk
