"""The default transport: HTTP/1.1 over trio sockets, httptools parsing, a keep-alive pool.

Why not httpx here: its client layer costs several times this transport's CPU
per request, and its pool degrades as concurrency grows (measured side by side
in ``benchmarks/``; figures in ``benchmarks/RESULTS.md``). This transport stays
cheap and flat in concurrency by doing only what an LLM API call needs:

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
from typing import TYPE_CHECKING, Literal

import httptools
import trio

from ._base import (
    ON_SEND,
    ConnectError,
    ConnectTimeout,
    ContentEncodingError,
    HTTPRequest,
    HTTPResponse,
    NetworkSettings,
    PoolTimeout,
    ProxyError,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    ResponseTooLarge,
    TLSError,
    TransportError,
    TransportLimits,
    WriteError,
    WriteTimeout,
)
from ._decode import ContentDecoder, decoder_for
from ._describe import describe, is_certificate_failure, timed_out
from ._http11 import ResponseReader, Target, encode_head, parse_url
from ._pool import OriginPool
from ._proxy import Proxy, ProxyRoutes, connect_request, parse_connect_reply
from ._tls import check_trust_options, client_context

if TYPE_CHECKING:
    import ssl
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


_PHASE_WORDS = {
    "connect": "",
    "write": " while sending the request",
    "read": " while reading the response",
}


def _translate(exc: BaseException, phase: _Phase, target: Target) -> TransportError:
    """The one place lower-layer exceptions become `TransportError`s.

    Messages say what happened in words (`describe`) and where, by origin only:
    URLs may carry keys and are never included.
    """
    label = target.label
    if isinstance(exc, trio.TooSlowError):
        return {"connect": ConnectTimeout, "write": WriteTimeout, "read": ReadTimeout}[phase](
            f"timed out{_PHASE_WORDS[phase] or ' connecting'} ({label})"
        )
    if isinstance(exc, httptools.HttpParserError | httptools.HttpParserUpgrade):
        return RemoteProtocolError(f"malformed response: {exc} ({label})")
    words = describe(exc, target.host)
    if phase == "connect":
        if is_certificate_failure(exc):
            return TLSError(words)
        return ConnectError(words if words.startswith("DNS:") else f"{words} ({label})")
    error = WriteError if phase == "write" else ReadError
    return error(f"{words}{_PHASE_WORDS[phase]} ({label})")


_IDEMPOTENT_PREFIXES = (b"GET ", b"HEAD ", b"OPTIONS ", b"PUT ", b"DELETE ")


def head_only_or_idempotent(head: bytes) -> bool:
    """Whether the request (its encoded head) uses an idempotent method."""
    return head.startswith(_IDEMPOTENT_PREFIXES)


#: A pooled connection idle at least this long (seconds) is looked at before reuse.
#: The look (`_closed_by_peer`) is a system call, a quarter of those an exchange
#: makes, and it exists for connections a server closed while they sat idle: its
#: keep-alive timeout (seconds: uvicorn and Node 5, gunicorn 2, nginx 75) ran
#: out. Under load a connection goes back out within milliseconds of its last
#: response, long before any such timeout. A server that hangs up at any moment
#: (a restart) can do so after the look just as well: that request fails as a
#: retryable `ReadError` (a POST is never sent twice) and the balancer retries.
PEER_CLOSE_CHECK_AFTER = 0.05


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
# ValueError, which would make every pooled connection past the 1024th look dead
# and be replaced. Windows has no poll(), and its select() has no such limit on
# descriptor values.
_poll = getattr(select, "poll", None)


def _happy_eyeballs(host: str) -> float | None:
    """No connection racing for an IP literal: it has one address, and each connect's
    racing timer (which fires whenever a connect takes over 0.25 s, as under a burst)
    is pure cost there."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return 0.25  # trio's default: race IPv6/IPv4 addresses of a name
    return None


def _decode_whole(headers: dict[str, str], body: bytes, limit: int, label: str) -> bytes:
    try:
        decoder = decoder_for(headers, limit)
        if decoder is None:
            return body
        decoded = decoder.decode(body)
        decoder.finish()
    except (ContentEncodingError, ResponseTooLarge) as exc:
        raise type(exc)(f"{exc} ({label})") from None
    return decoded


def _forward_head(request: HTTPRequest, target: Target, proxy: Proxy) -> bytes:
    """The request head for an http origin through a proxy: absolute form, proxy credentials."""
    absolute = target._replace(target=f"http://{target.host_header}{target.target}")
    headers = list(request.headers)
    if proxy.authorization is not None:
        headers.append(("proxy-authorization", proxy.authorization))
    return encode_head(request.method, absolute, headers, request.body)


#: Cap on a proxy's reply to CONNECT (status line and headers).
_MAX_CONNECT_REPLY = 64 * 1024


async def _open_tunnel(tcp: trio.SocketStream, target: Target, proxy: Proxy) -> None:
    """CONNECT through ``proxy`` to ``target``; on return ``tcp`` carries the tunnel.

    Raises:
        ProxyError: the proxy refused (its status and reason in the message) or
            broke off; never with its credentials.
    """
    authority = f"{target.host}:{target.port}"
    try:
        await tcp.send_all(connect_request(target.host, target.port, proxy))
        reply = bytearray()
        while (parsed := parse_connect_reply(reply)) is None:
            data = await tcp.receive_some(_RECEIVE_BYTES)
            if not data:
                raise ProxyError(
                    f"proxy {proxy.label} closed the connection before answering CONNECT"
                )
            reply += data
            if len(reply) > _MAX_CONNECT_REPLY:
                raise ProxyError(
                    f"proxy {proxy.label}: reply to CONNECT over {_MAX_CONNECT_REPLY} bytes"
                )
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise ProxyError(f"proxy {proxy.label}: {describe(exc, proxy.host)}") from exc
    except ValueError as exc:
        raise ProxyError(f"proxy {proxy.label}: {exc}") from None
    status, reason, length = parsed
    if not 200 <= status < 300:
        raise ProxyError(
            f"proxy {proxy.label} refused the tunnel to {authority}: {status} {reason}".rstrip(),
            status=status,
        )
    if length != len(reply):
        # Bytes from the origin before we spoke TLS: not a tunnel we can trust.
        raise ProxyError(f"proxy {proxy.label} sent data after its CONNECT reply")


class _StaleConnection(Exception):
    """A reused connection was closed by the server before it answered. Internal."""


class _Connection:
    """One open HTTP/1.1 connection. Strictly private.

    A plain-TCP connection on POSIX is read and written with ``os.read`` and
    ``os.write`` on its descriptor, waiting with `trio.lowlevel.wait_readable`
    / ``wait_writable`` only when the socket would block. trio's own socket
    methods wrap each call in a cancellation check, a forced scheduler pass and
    three nested coroutines: with thousands in flight that machinery (and the
    garbage collector walking it while it waits) costs more than the exchange. TLS
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
    socket operation (entering a scope costs several times moving a deadline).
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
            return WriteTimeout(timed_out(self.write, "sending the request", label))
        return ReadTimeout(timed_out(self.read, "reading the response", label))


class TrioTransport:
    """The default `Transport`: HTTP/1.1 over trio sockets with the httptools parser.

    One instance is shared by every provider actor of a balancer, inside one
    trio run. Connections are pooled per origin (scheme, host, port), at most
    ``limits.max_connections`` each. Redirects are returned, never followed.
    ``accept-encoding: identity`` is sent; a gzip or deflate body is decoded
    anyway (capped at ``max_response_bytes`` decoded), other codings refused
    (`_decode`). Trailer fields are dropped, never merged into the headers.

    Args:
        limits: timeouts, pool size and size caps (`TransportLimits`).
        proxy: an ``http://[user:pass@]host:port`` proxy for every origin:
            https origins are tunnelled (CONNECT), http origins sent in
            absolute form. Default: none, or the environment's (`_proxy`).
        trust_env: read ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY``/``NO_PROXY``
            and ``SSL_CERT_FILE``/``SSL_CERT_DIR`` (read once, here).
        ca_bundle: a PEM file (or directory) of CAs trusted instead of the
            system store.
        ssl_context: the context for https origins, used as given.
            Default (neither): the system store, see `_tls`; certificates and
            host names verified.

    Raises:
        ValueError: ``max_connections`` below 1, ``ssl_context`` or
            ``ca_bundle`` with ``verify_tls=False`` or with each other, a
            missing ``ca_bundle``, or a proxy URL that is not http://.
    """

    def __init__(
        self,
        limits: TransportLimits | None = None,
        *,
        proxy: str | None = None,
        trust_env: bool = True,
        ca_bundle: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.limits = limits = limits or TransportLimits()
        if limits.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        check_trust_options(
            verify_tls=limits.verify_tls, ca_bundle=ca_bundle, ssl_context=ssl_context
        )
        routes = ProxyRoutes(proxy, trust_env=trust_env)
        if not limits.verify_tls:
            log.warning("TLS certificate verification is OFF for the trio transport")
        self._network = NetworkSettings(proxy, trust_env, ca_bundle, ssl_context)
        # None when no origin can use a proxy: the hot path then never looks.
        self._routes = routes if routes.enabled else None
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
                await self._receive(conn, reader, target, deadlines)
        except BaseException:
            conn.close()
            pool.discard()
            raise
        chunks = reader.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._finish(pool, conn, reader)
        headers = reader.headers
        if "content-encoding" in headers and body:
            body = _decode_whole(headers, body, self.limits.max_response_bytes, target.label)
        return HTTPResponse(reader.status, headers, body)

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
        routes = self._routes
        if routes is None:  # no proxy anywhere: one test on the hot path
            proxy = None
            head = encode_head(request.method, target, request.headers, body)
        else:
            proxy = routes.for_origin(*target.origin)
            if proxy is None or target.tls:
                head = encode_head(request.method, target, request.headers, body)
            else:
                head = _forward_head(request, target, proxy)
        if body:
            if len(body) <= _COALESCE_BYTES:
                head += body
                body = None
        else:
            body = None
        head_only = request.method == "HEAD"
        pool = self._pool(target)
        now = trio.current_time()
        try:
            conn = await pool.acquire(now, self.limits.pool_timeout)
        except PoolTimeout:
            waited = timed_out(
                self.limits.pool_timeout, "waiting for a free connection", target.label
            )
            raise PoolTimeout(waited) from None
        if (
            conn is not None
            and now - conn.idle_since >= PEER_CLOSE_CHECK_AFTER
            and _closed_by_peer(conn)
        ):
            # The server hung up while it sat idle: replace it before sending anything.
            conn.close()
            conn = None
        try:
            if conn is None:
                conn = await self._connect(target, deadlines, proxy)
            try:
                reader = await self._exchange_head(
                    conn, target, head, body, head_only, limit, deadlines
                )
            except _StaleConnection:
                # The slot stays ours; the fresh connection takes it over.
                conn = await self._connect(target, deadlines, proxy)
                reader = await self._exchange_head(
                    conn, target, head, body, head_only, limit, deadlines
                )
            if proxy is not None and reader.status == 407:
                raise ProxyError(
                    f"proxy {proxy.label} refused the request to {target.label}: 407 "
                    "Proxy Authentication Required",
                    status=407,
                )
        except BaseException:
            if conn is not None:
                conn.close()
            pool.discard()
            raise
        return conn, reader, pool

    async def _connect(
        self, target: Target, deadlines: _Deadlines | None, proxy: Proxy | None
    ) -> _Connection:
        if deadlines is not None:
            deadlines.connecting()
        if self._closed:
            raise TransportError("transport is closed")
        conn: _Connection | None = None
        host, port = (target.host, target.port) if proxy is None else (proxy.host, proxy.port)
        timeout = self.limits.connect_timeout
        try:
            with trio.move_on_after(timeout):
                try:
                    tcp = await trio.open_tcp_stream(
                        host, port, happy_eyeballs_delay=_happy_eyeballs(host)
                    )
                except OSError as exc:
                    if proxy is None:
                        raise
                    raise ProxyError(f"proxy {proxy.label}: {describe(exc, host)}") from exc
                conn = _Connection(tcp, tcp.socket)
                if target.tls:
                    if proxy is not None:
                        await _open_tunnel(tcp, target, proxy)
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
                raise _translate(exc, "connect", target) from exc
            raise
        if conn is not None:
            conn.close()
        where = target.label if proxy is None else f"proxy {proxy.label}"
        raise ConnectTimeout(timed_out(timeout, "connecting", where))

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            network = self._network
            self._ssl_context = client_context(
                verify_tls=self.limits.verify_tls,
                ca_bundle=network.ca_bundle,
                trust_env=network.trust_env,
            )
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
        on_send = ON_SEND.get()
        if on_send is not None:
            on_send()
        try:
            await conn.send_all(head)
            if body is not None:
                await conn.send_all(body)
        except _IO_ERRORS as exc:
            conn.close()
            if conn.reused and not isinstance(exc, trio.TooSlowError):
                raise _StaleConnection from exc
            raise _translate(exc, "write", target) from exc
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
            raise _translate(exc, "read", target) from exc
        if not data:
            conn.close()
            if replayable:
                raise _StaleConnection
            raise ReadError(f"server closed the connection without a response ({target.label})")
        try:
            reader.feed(data)
        except _IO_ERRORS as exc:
            raise _translate(exc, "read", target) from exc
        while not reader.headers_done:
            await self._receive(conn, reader, target, deadlines)
        return reader

    async def _receive(
        self,
        conn: _Connection,
        reader: ResponseReader,
        target: Target,
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
            raise _translate(exc, "read", target) from exc
        if not reader.feed_eof():
            raise ReadError(f"server closed the connection mid-response ({target.label})")

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
        decoder = None
        if "content-encoding" in reader.headers and (reader.chunks or not reader.complete):
            try:
                decoder = decoder_for(reader.headers, transport.limits.max_response_bytes)
            except ContentEncodingError as exc:
                conn.close()
                pool.discard()
                raise ContentEncodingError(f"{exc} ({target.label})") from None
        self._response = _StreamingResponse(transport, pool, conn, reader, target, decoder)
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
        "_decoder",
        "_failed",
        "_pool",
        "_reader",
        "_target",
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
        target: Target,
        decoder: ContentDecoder | None,
    ) -> None:
        self._transport = transport
        self._pool = pool
        self._conn: _Connection | None = conn
        self._reader = reader
        self._target = target
        self._decoder = decoder
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
                chunk = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                if self._decoder is None:
                    return chunk
                chunk = self._decode(chunk)
                if chunk:
                    return chunk
                continue
            if reader.complete:
                if self._decoder is not None:
                    self._decode(None)
                return None
            conn = self._conn
            if conn is None or self._failed:
                raise ReadError(f"the response stream is closed ({self._target.label})")
            try:
                await self._receive_one(conn, reader)
            except BaseException:
                # Leave the socket for `_close` (which closes it: the body is
                # incomplete), but never read from it again.
                self._failed = True
                raise

    def _decode(self, chunk: bytes | None) -> bytes:
        """Decoded bytes of ``chunk``; None: the body ended (the coding must end too)."""
        assert self._decoder is not None
        try:
            if chunk is None:
                self._decoder.finish()
                return b""
            return self._decoder.decode(chunk)
        except (ContentEncodingError, ResponseTooLarge) as exc:
            self._failed = True
            raise type(exc)(f"{exc} ({self._target.label})") from None

    async def _receive_one(self, conn: _Connection, reader: ResponseReader) -> None:
        transport = self._transport
        read_timeout = transport.limits.read_timeout
        if read_timeout is None:
            await transport._receive(conn, reader, self._target, None)
            return
        # A stream's reads happen in the caller's iterations, so no scope can
        # span them: one scope per receive, only when a read timeout is set.
        with trio.move_on_after(read_timeout) as scope:
            await transport._receive(conn, reader, self._target, None)
        if scope.cancelled_caught:
            raise ReadTimeout(timed_out(read_timeout, "reading the response", self._target.label))

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

    @property
    def complete(self) -> bool:
        """The whole body arrived and was handed out: nothing is left to wait for
        (a content-decoded body still has its decoder to finish: not complete)."""
        response = self._response
        reader = response._reader
        return reader.complete and not reader.chunks and response._decoder is None

    async def __anext__(self) -> bytes:
        chunk = await self._response._next_chunk()
        if chunk is None:
            raise StopAsyncIteration
        return chunk
