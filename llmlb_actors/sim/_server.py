"""One simulated provider on its own loopback port: listener, connections, faults.

Raw trio sockets and the httptools parser keep a request/response exchange
in the tens of microseconds, so the simulator is never the bottleneck of a
benchmark. Every socket error is a client going away and ends only that
connection; everything runs in the provider's nursery, so stopping the
provider cancels its listener and all its connections at once.
"""

from __future__ import annotations

import errno
import socket
import struct
import time
from collections import deque
from random import Random
from typing import TYPE_CHECKING, Final

import trio

from ._behaviour import HTTP_ERROR_OUTCOMES, Behaviour, SimProvider, choose_outcome
from ._http import CHUNK_END, ParseError, Request, RequestParser, chunk, response_head
from ._protocols import make_protocol
from ._protocols._base import (
    CHAT,
    HEALTH,
    Answer,
    BadRequest,
    ChatInput,
    Reply,
    Route,
    make_reply,
    reply_words,
)
from ._quota import SimQuota
from ._stats import StatsRecorder

if TYPE_CHECKING:
    from ._protocols._base import WireProtocol

__all__ = ["ProviderServer"]

_RECV_SIZE: Final = 65536
_BACKLOG: Final = 4096
_RST_LINGER: Final = struct.pack("ii", 1, 0)
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_SSE_HEADERS: Final = b"cache-control: no-cache\r\n"
_LINGER_SECONDS: Final = 2.0
_LINGER_BYTES: Final = 64 * 1024 * 1024
_RESOURCE_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
# accept() errors that belong to one pending connection, not to the listener
_PEER_ERRNOS: Final = frozenset(
    {errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ENETDOWN, errno.ENETUNREACH}
    | {errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.ENOPROTOOPT, errno.EOPNOTSUPP}
)


async def _send(conn: trio.socket.SocketType, data: bytes) -> None:
    sent = await conn.send(data)
    if sent < len(data):
        view = memoryview(data)[sent:]
        while view:
            sent = await conn.send(view)
            view = view[sent:]


async def _wait_closed(conn: trio.socket.SocketType) -> None:
    """Hold the connection open, discarding input, until the client goes away."""
    while True:
        try:
            data = await conn.recv(_RECV_SIZE)
        except OSError:
            return
        if not data:
            return


async def _linger(conn: trio.socket.SocketType) -> None:
    """Half-close, then drain what the client is still sending before the close.

    Closing a socket with unread input sends RST, and the client's TCP stack
    may then drop our error answer before the client reads it.
    """
    try:
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        return
    drained = 0
    with trio.move_on_after(_LINGER_SECONDS):
        while drained < _LINGER_BYTES:
            try:
                data = await conn.recv(_RECV_SIZE)
            except OSError:
                return
            if not data:
                return
            drained += len(data)


def _reset(conn: trio.socket.SocketType) -> None:
    """Close with RST instead of FIN: linger on, timeout zero."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST_LINGER)
    conn.close()


def _split_target(target: bytes) -> tuple[str, str]:
    text = target.decode("latin-1")
    if not text.startswith("/"):
        # absolute-form (``http://host/path``), as sent through proxies
        _scheme, sep, rest = text.partition("://")
        if sep:
            slash = rest.find("/")
            text = rest[slash:] if slash >= 0 else "/"
    path, _, query = text.partition("?")
    return path, query


class ProviderServer:
    """One simulated provider. Strictly private: `Simulator` is the public handle.

    Run it with ``await nursery.start(server.run)``; ``stop()`` closes the
    listener and every connection, ``run`` may then be started again on the
    same port.
    """

    def __init__(self, spec: SimProvider, *, host: str, redirect_port: int) -> None:
        self.spec = spec
        self.host = host
        self.port = spec.port
        self.protocol: WireProtocol = make_protocol(
            spec.protocol,
            name=spec.name,
            model=spec.model_id,
            api_key=spec.api_key,
            created=int(time.time()),
        )
        self.behaviour = spec.behaviour
        self.rng = Random(spec.behaviour.seed)
        self.quota: SimQuota | None = None  # made on the first chat request (needs the clock)
        self.script: deque[str] = deque()
        self.stats = StatsRecorder()
        self.running = False
        self._redirect_base = f"http://{host}:{redirect_port}".encode()
        self._seq = 0
        self._scope: trio.CancelScope | None = None
        self._stopped = trio.Event()

    def set_behaviour(self, behaviour: Behaviour) -> None:
        """Switch behaviour; the random generator restarts from its seed.

        Quotas restart empty when they change; unchanged ones keep their usage.
        """
        if behaviour.quotas != self.behaviour.quotas:
            self.quota = None
        self.behaviour = behaviour
        self.rng = Random(behaviour.seed)

    def _quota(self, now: float) -> SimQuota | None:
        if self.quota is None and self.behaviour.quotas != (None, None, None):
            rpm, tpm, rpd = self.behaviour.quotas
            self.quota = SimQuota(rpm, tpm, rpd, now)
        return self.quota

    def _quota_headers(self) -> bytes:
        quota = self.quota
        if quota is None:
            return b""
        return self.protocol.quota_headers(quota.state(trio.current_time()))

    # lifetime -----------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until `stop` (or the enclosing nursery is cancelled)."""
        self._stopped = trio.Event()
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            await sock.bind((self.host, self.port))
            sock.listen(_BACKLOG)
            self.port = sock.getsockname()[1]
            try:
                async with trio.open_nursery() as nursery:
                    self._scope = nursery.cancel_scope
                    self.running = True
                    task_status.started()
                    await self._accept(sock, nursery)
            finally:
                self.running = False
                self._stopped.set()

    async def stop(self) -> None:
        """Close the listener and all connections; returns once they are closed."""
        if self.running and self._scope is not None:
            self._scope.cancel()
            await self._stopped.wait()

    async def _accept(self, sock: trio.socket.SocketType, nursery: trio.Nursery) -> None:
        while True:
            try:
                conn, _ = await sock.accept()
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRNOS:
                    await trio.sleep(0.01)  # out of descriptors: let connections finish
                elif exc.errno not in _PEER_ERRNOS:
                    raise
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            nursery.start_soon(self._serve_connection, conn)

    # one connection -----------------------------------------------------

    async def _serve_connection(self, conn: trio.socket.SocketType) -> None:
        self.stats.connections += 1
        self.stats.open_connections += 1
        parser = RequestParser()
        with conn:
            try:
                while True:
                    data = await conn.recv(_RECV_SIZE)
                    if not data:
                        return
                    try:
                        parser.feed(data)
                    except ParseError as exc:
                        answer = self.protocol.error(exc.status, self.behaviour.retry_after)
                        await _send(conn, self._answer_bytes(answer, 0, keep_alive=False))
                        await _linger(conn)
                        return
                    if parser.expect_continue:
                        parser.expect_continue = False
                        await _send(conn, _CONTINUE)
                    while parser.ready:
                        if not await self._respond(conn, parser.ready.popleft()):
                            return
            except OSError:
                return  # the client went away; nothing to answer
            finally:
                self.stats.open_connections -= 1

    def _answer_bytes(
        self, answer: Answer, seq: int, *, keep_alive: bool, extra: bytes = b""
    ) -> bytes:
        head = response_head(
            answer.status,
            self.protocol.content_type,
            self.protocol.headers(seq) + answer.headers + extra,
            length=len(answer.body),
            keep_alive=keep_alive,
        )
        return head + answer.body

    async def _send_answer(
        self, conn: trio.socket.SocketType, req: Request, answer: Answer, extra: bytes = b""
    ) -> bool:
        self._seq += 1
        data = self._answer_bytes(answer, self._seq, keep_alive=req.keep_alive, extra=extra)
        await _send(conn, data)
        return req.keep_alive

    async def _respond(self, conn: trio.socket.SocketType, req: Request) -> bool:
        """Answer one request; returns whether the connection stays open."""
        proto = self.protocol
        path, query = _split_target(req.target)
        route = proto.route(req.method, path, query)
        if route.kind == CHAT:
            return await self._chat(conn, req, route, query)
        if route.kind == HEALTH:
            self.stats.health_probes += 1
            if not (route.public or proto.authorized(req.headers, query)):
                answer = proto.auth_error()
            else:
                answer = proto.precheck(req.headers) or proto.health(route)
            return await self._send_answer(conn, req, answer)
        return await self._send_answer(conn, req, proto.not_found(req.method, path))

    async def _chat(
        self, conn: trio.socket.SocketType, req: Request, route: Route, query: str
    ) -> bool:
        proto = self.protocol
        stats = self.stats
        stats.requests += 1
        stats.last_headers = req.headers
        stats.last_body = req.body
        stats.last_target = req.target
        answer: Answer | None = None
        if not proto.authorized(req.headers, query):
            answer = proto.auth_error()
        else:
            answer = proto.precheck(req.headers)
        if answer is None:
            try:
                chat = proto.parse_chat(route, req.body)
            except BadRequest as exc:
                answer = proto.bad_request(exc)
            else:
                if chat.model != proto.model:
                    answer = proto.model_not_found(chat.model)
        if answer is not None:
            stats.count_outcome(str(answer.status))
            return await self._send_answer(conn, req, answer)
        now = trio.current_time()
        quota = self._quota(now)
        if quota is not None:
            tokens = chat.input_words + reply_words(chat, self.behaviour, self.spec.name)
            refusal = quota.admit(tokens, now)
            if refusal is not None:
                # Refused on arrival, as real APIs do: no latency, no scripted outcome used.
                stats.count_outcome("429")
                stats.rate_limited += 1
                return await self._send_answer(
                    conn, req, proto.quota_error(refusal, quota.state(now))
                )
        if chat.stream:
            stats.streams += 1
        outcome = choose_outcome(self.behaviour, self.script, self.rng)
        stats.count_outcome(outcome)
        return await self._execute(conn, req, route, chat, outcome)

    # outcomes -----------------------------------------------------------

    async def _execute(
        self,
        conn: trio.socket.SocketType,
        req: Request,
        route: Route,
        chat: ChatInput,
        outcome: str,
    ) -> bool:
        behaviour = self.behaviour
        if outcome == "hang":
            await _wait_closed(conn)
            return False
        sse = chat.stream and route.sse
        delay = behaviour.latency
        if behaviour.latency_jitter:
            delay += self.rng.uniform(0.0, behaviour.latency_jitter)
        if outcome == "slow" and not sse:
            delay *= 10
        if delay > 0:
            await trio.sleep(delay)
        if outcome == "reset":
            _reset(conn)
            return False
        if outcome in HTTP_ERROR_OUTCOMES or (outcome == "stream_error" and not sse):
            status = 500 if outcome == "stream_error" else int(outcome)
            return await self._send_answer(
                conn,
                req,
                self.protocol.error(status, behaviour.retry_after),
                self._quota_headers(),
            )
        if outcome == "redirect":
            location = b"location: " + self._redirect_base + req.target + b"\r\n"
            return await self._send_answer(conn, req, Answer(307, location, b""))
        self._seq += 1
        reply = make_reply(
            chat=chat,
            behaviour=behaviour,
            provider=self.spec.name,
            reply_id=f"{self.protocol.id_prefix}{self._seq}",
        )
        if sse:
            return await self._stream(conn, req, chat, reply, outcome)
        proto = self.protocol
        body = proto.json_array(reply, chat) if chat.stream else proto.whole(reply)
        if outcome == "malformed":
            body = body[: len(body) // 2]
        elif outcome == "wrong_shape":
            body = proto.wrong_shape(reply)
        keep = req.keep_alive and outcome not in ("cut", "stall")
        head = response_head(
            200,
            proto.content_type,
            proto.headers(self._seq) + self._quota_headers(),
            length=len(body),
            keep_alive=keep,
        )
        if outcome in ("cut", "stall"):
            await _send(conn, head + body[: len(body) // 2])
            if outcome == "stall":
                await _wait_closed(conn)
            return False
        await _send(conn, head + body)
        return keep

    async def _stream(
        self,
        conn: trio.socket.SocketType,
        req: Request,
        chat: ChatInput,
        reply: Reply,
        outcome: str,
    ) -> bool:
        proto = self.protocol
        plan = proto.stream(reply, chat)
        chunked = req.http11
        keep = req.keep_alive and chunked and outcome not in ("cut", "stall")
        frame = chunk if chunked else bytes
        deltas = plan.deltas
        ending: list[bytes] | None = plan.tail
        if outcome == "malformed":
            deltas = [*deltas[:1], plan.malformed]
        elif outcome == "wrong_shape":
            deltas = [plan.wrong_shape]
        elif outcome in ("cut", "stall", "stream_error"):
            deltas = deltas[: len(deltas) // 2]
            ending = plan.error if outcome == "stream_error" else None
        last = b""
        if ending is not None:
            last = b"".join(frame(event) for event in ending) + (CHUNK_END if chunked else b"")
        head = response_head(
            200,
            b"text/event-stream",
            proto.headers(self._seq) + self._quota_headers() + _SSE_HEADERS,
            length=None,
            keep_alive=keep,
            chunked=chunked,
        )
        first = head + b"".join(frame(event) for event in plan.head)
        delay = self.behaviour.token_delay * (10 if outcome == "slow" else 1)
        if delay <= 0 or len(deltas) < 2:
            await _send(conn, first + b"".join(frame(d) for d in deltas) + last)
        else:
            await _send(conn, first + frame(deltas[0]))
            for delta in deltas[1:]:
                await trio.sleep(delay)
                await _send(conn, frame(delta))
            if last:
                await _send(conn, last)
        if outcome == "stall":
            await _wait_closed(conn)
            return False
        return keep
