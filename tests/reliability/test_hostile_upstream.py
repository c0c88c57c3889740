"""Hostile upstreams: each misbehaviour ends in a typed error, in time, in bounded memory.

Every test talks to a raw trio socket server (``_servers.py``) that does one
nasty thing, over both transports, on the autojump clock. Besides the typed
outcome, each checks that the provider actor never crashed (a hostile answer
is the answer's fault, not a bug to restart for) and, where the answer is
big, that Python's allocations stayed within the configured caps
(``max_response_bytes``, ``max_header_bytes``, the SSE line/event caps).
"""

from __future__ import annotations

import tracemalloc
from typing import TYPE_CHECKING, Any

import pytest
import trio

import llmlb_actors as llmlb
from llmlb_actors.providers._http import MAX_SSE_EVENT_BYTES, MAX_SSE_LINE_BYTES
from llmlb_actors.testing import ZeroJitter
from tests.reliability import _servers as srv
from tests.reliability._support import classification_problems

if TYPE_CHECKING:
    from trio.testing import MockClock

REQ = llmlb.LLMRequest(prompt="be nice")
CAP = 1024 * 1024  # max_response_bytes in these tests
HUNDRED_MB = 100 * 1024 * 1024
ATTEMPT = 5.0
MiB = 1024 * 1024


@pytest.fixture(params=["default", "httpx"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def outcome_of(
    handler: srv.Handler, transport: str, *, stream: bool = False, **settings: Any
) -> tuple[Any, llmlb.ProviderStats, float, srv.RawServer]:
    """Run one request against a server running ``handler``; the outcome, stats, time."""
    options: dict[str, Any] = {
        "transport": transport,
        "health_check_interval": None,
        "max_retries": 1,
        "retry_delay": 0.1,
        "global_timeout": ATTEMPT,
        "max_response_bytes": CAP,
        "stream_idle_timeout": ATTEMPT,
        "rng": ZeroJitter(),
    }
    options.update(settings)
    async with trio.open_nursery() as nursery:
        server = await srv.start(nursery, handler)
        config = llmlb.ProviderConfig(
            name="hostile",
            provider="openai-compatible",
            base_url=server.url(),
            model="m",
            api_key="sk-hostile-KEY-123456",
        )
        start = trio.current_time()
        result: Any
        async with llmlb.open_balancer(providers=[config], **options) as lb:
            try:
                if stream:
                    async with lb.stream(REQ) as chunks:
                        result = [c async for c in chunks]
                else:
                    result = await lb.request(REQ)
            except llmlb.LLMLBError as exc:
                result = exc
            elapsed = trio.current_time() - start
            await trio.testing.wait_all_tasks_blocked()
            stats = lb.get_stats()["hostile"]
        nursery.cancel_scope.cancel()
    assert stats.restarts == 0, "a hostile answer crashed the provider actor"
    assert stats.in_flight == 0
    assert stats.total_requests == stats.successful_requests + stats.failed_requests
    return result, stats, elapsed, server


def attempt_errors(result: Any) -> list[llmlb.LLMError]:
    """The typed attempt errors of a failed request (or of a stream broken midway)."""
    if isinstance(result, llmlb.LoadBalancerError):
        assert result.errors, result
        errors = result.errors
    else:
        assert isinstance(result, llmlb.LLMError), f"expected a typed error, got {result!r}"
        errors = [result]
    for error in errors:
        assert not classification_problems(error), classification_problems(error)
    return errors


# -- a 100 MB body -------------------------------------------------------------------


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_a_100_mb_body_is_cut_off_at_the_cap(
    transport: str, declared: bool, autojump_clock: MockClock
) -> None:
    sent = 0
    piece = b"x" * 65536

    async def handler(stream: trio.abc.Stream, request: srv.Request) -> None:
        nonlocal sent
        length = HUNDRED_MB if declared else None
        await stream.send_all(srv.head(200, ("Content-Type", "application/json"), length=length))
        while sent < HUNDRED_MB:
            await stream.send_all(piece if declared else srv.chunk(piece))
            sent += len(piece)

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result, stats, elapsed, _ = await outcome_of(handler, transport)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    errors = attempt_errors(result)
    assert [e.kind for e in errors] == ["protocol"]
    assert "too large" in errors[0].message
    assert not errors[0].retryable  # the same answer would come back: not retried
    assert result.message.startswith("Request rejected by hostile")
    assert elapsed < ATTEMPT
    assert sent < HUNDRED_MB / 4  # the client stopped reading long before the end
    assert peak < 8 * CAP, f"{peak / MiB:.1f} MiB allocated for a {CAP / MiB:.0f} MiB cap"
    assert stats.failed_requests == 1


# -- an endless slow body --------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_an_endless_slow_body_times_out(
    transport: str, stream: bool, autojump_clock: MockClock
) -> None:
    async def handler(sock: trio.abc.Stream, request: srv.Request) -> None:
        if stream:
            await sock.send_all(srv.head(200, ("Content-Type", "text/event-stream")))
            while True:
                await sock.send_all(srv.chunk(b": still thinking\n\n"))
                await trio.sleep(1.0)
        await sock.send_all(srv.head(200, ("Content-Type", "application/json"), length=10_000))
        while True:
            await sock.send_all(b" ")
            await trio.sleep(1.0)

    result, stats, elapsed, server = await outcome_of(handler, transport, stream=stream)
    errors = attempt_errors(result)
    assert [e.kind for e in errors] == ["timeout", "timeout"]
    assert all(e.retryable for e in errors)
    assert elapsed == pytest.approx(2 * ATTEMPT + 0.1, abs=0.01)
    assert len(server.requests) == 2
    assert stats.failed_requests == 2


# -- endless SSE streams ---------------------------------------------------------------


@pytest.mark.parametrize("shape", ["endless-line", "endless-event"])
async def test_an_endless_sse_line_or_event_hits_its_cap(
    transport: str, shape: str, autojump_clock: MockClock
) -> None:
    async def handler(sock: trio.abc.Stream, request: srv.Request) -> None:
        await sock.send_all(srv.head(200, ("Content-Type", "text/event-stream")))
        if shape == "endless-line":
            await sock.send_all(srv.chunk(b"data: "))
            piece = srv.chunk(b"y" * 65536)  # never a newline
        else:
            piece = srv.chunk(b"data: " + b"y" * 65530 + b"\n")  # never a blank line
        while True:
            await sock.send_all(piece)

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result, _, elapsed, _ = await outcome_of(handler, transport, stream=True, max_retries=0)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    errors = attempt_errors(result)
    assert [e.kind for e in errors] == ["protocol"]
    assert "malformed event stream" in errors[0].message
    assert elapsed < ATTEMPT
    cap = MAX_SSE_LINE_BYTES if shape == "endless-line" else MAX_SSE_EVENT_BYTES
    assert peak < 4 * cap + 4 * MiB, f"{peak / MiB:.1f} MiB for a {cap / MiB:.0f} MiB cap"


async def test_an_endless_valid_stream_stays_small_and_closes_when_left(
    transport: str, autojump_clock: MockClock
) -> None:
    sent = 0
    closed = trio.Event()

    async def handler(sock: trio.abc.Stream, request: srv.Request) -> None:
        nonlocal sent
        await sock.send_all(srv.head(200, ("Content-Type", "text/event-stream")))
        try:
            while True:
                await sock.send_all(srv.chunk(srv.delta_event("more ")))
                sent += 1
                await trio.sleep(0.001)
        finally:
            closed.set()

    config_kw: dict[str, Any] = {
        "transport": transport,
        "health_check_interval": None,
        "stream_idle_timeout": ATTEMPT,
    }
    tracemalloc.start()
    try:
        async with trio.open_nursery() as nursery:
            server = await srv.start(nursery, handler)
            config = llmlb.ProviderConfig(
                name="hostile",
                provider="openai-compatible",
                base_url=server.url(),
                model="m",
                api_key_required=False,
            )
            async with llmlb.open_balancer(providers=[config], **config_kw) as lb:
                received = 0
                async with lb.stream(REQ) as chunks:
                    async for _ in chunks:
                        received += 1
                        if received == 300:
                            tracemalloc.reset_peak()
                            base = tracemalloc.get_traced_memory()[0]
                        if received == 3300:
                            break
                growth = tracemalloc.get_traced_memory()[1] - base
                with trio.fail_after(1.0):
                    await closed.wait()  # leaving the block closed the upstream
                await trio.testing.wait_all_tasks_blocked()
                stats = lb.get_stats()["hostile"]
            nursery.cancel_scope.cancel()
    finally:
        tracemalloc.stop()
    assert sent - received < 10  # the worker never reads far ahead of the caller
    assert growth < MiB, f"{growth / MiB:.2f} MiB more over 3,000 chunks"
    assert stats.cancelled_requests == 1
    assert stats.in_flight == 0


# -- a huge header -----------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["one-huge-line", "endless-lines"])
async def test_a_huge_response_head_is_a_protocol_error(
    transport: str, shape: str, autojump_clock: MockClock
) -> None:
    async def handler(sock: trio.abc.Stream, request: srv.Request) -> None:
        await sock.send_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        if shape == "one-huge-line":
            await sock.send_all(b"X-Huge: " + b"h" * (4 * MiB) + b"\r\n\r\n")
            await sock.send_all(srv.completion())
            return
        for i in range(1_000_000):
            await sock.send_all(b"X-More-%d: %s\r\n" % (i, b"m" * 100))

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result, _, elapsed, server = await outcome_of(handler, transport)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    errors = attempt_errors(result)
    assert [e.kind for e in errors] == ["protocol", "protocol"]
    assert all(e.retryable for e in errors)
    assert elapsed < 2 * ATTEMPT
    assert len(server.requests) == 2
    assert peak < 12 * MiB, f"{peak / MiB:.1f} MiB allocated for a huge head"


# -- non-UTF-8 bytes ---------------------------------------------------------------------

_BAD_UTF8_JSON = (
    b'{"id":"c","object":"chat.completion","model":"m","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"\xff\xfe bad"},"finish_reason":"stop"}]}'
)


@pytest.mark.parametrize(
    "case", ["binary-body", "bad-utf8-in-json", "error-body", "header-bytes", "sse-event"]
)
async def test_non_utf8_bytes_never_crash_anything(
    transport: str, case: str, autojump_clock: MockClock
) -> None:
    async def handler(sock: trio.abc.Stream, request: srv.Request) -> None:
        if case == "binary-body":
            await sock.send_all(srv.whole(200, b"\xff\xfe\xfd\x00\x80 not json"))
        elif case == "bad-utf8-in-json":
            await sock.send_all(srv.whole(200, _BAD_UTF8_JSON))
        elif case == "error-body":
            await sock.send_all(srv.whole(500, b'{"error":{"message":"\xc3\x28 \xff oops"}}'))
        elif case == "header-bytes":
            body = srv.completion("headers were odd")
            await sock.send_all(
                b"HTTP/1.1 200 \xff\xfe\r\nContent-Type: application/json\r\n"
                b"X-Note: caf\xe9 \xff\xfe\x80\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )
        else:
            await sock.send_all(srv.head(200, ("Content-Type", "text/event-stream")))
            await sock.send_all(srv.chunk(srv.delta_event("first ")))
            await sock.send_all(
                srv.chunk(b'data: {"choices":[{"delta":{"content":"\xff\xfe"}}]}\n\n')
            )
            await sock.send_all(srv.chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")

    stream = case == "sse-event"
    result, stats, _, _ = await outcome_of(handler, transport, stream=stream)
    if case == "header-bytes":
        assert isinstance(result, llmlb.LLMResponse), result
        assert result.content == "headers were odd"
        return
    if stream:
        # Server-sent events are decoded as UTF-8 with replacement (WHATWG): the
        # bad bytes become U+FFFD and the stream completes.
        assert isinstance(result, list), result
        assert "".join(c.delta for c in result) == "first \ufffd\ufffd"
        return
    errors = attempt_errors(result)
    if case == "error-body":
        assert [(e.kind, e.status) for e in errors] == [("http", 500)] * 2
        assert "oops" in errors[0].message
    else:
        assert [e.kind for e in errors] == ["protocol", "protocol"]
    assert stats.successful_requests == 0


# -- JSON nested 10,000 deep ----------------------------------------------------------------

_DEEP = b"[" * 10_000 + b"]" * 10_000
_DEEP_OBJECT = b'{"a":' * 10_000 + b"1" + b"}" * 10_000


@pytest.mark.parametrize("case", ["answer", "answer-object", "error-body", "sse-event"])
async def test_json_nested_10000_deep_is_a_typed_error(
    transport: str, case: str, autojump_clock: MockClock
) -> None:
    async def handler(sock: trio.abc.Stream, request: srv.Request) -> None:
        if case == "answer":
            await sock.send_all(srv.whole(200, _DEEP))
        elif case == "answer-object":
            await sock.send_all(srv.whole(200, _DEEP_OBJECT))
        elif case == "error-body":
            await sock.send_all(srv.whole(503, b'{"error":' + _DEEP_OBJECT + b"}"))
        else:
            await sock.send_all(srv.head(200, ("Content-Type", "text/event-stream")))
            await sock.send_all(srv.chunk(b"data: " + _DEEP + b"\n\n"))
            await sock.send_all(b"0\r\n\r\n")

    result, stats, elapsed, _ = await outcome_of(handler, transport, stream=case == "sse-event")
    errors = attempt_errors(result)
    if case == "error-body":
        assert [(e.kind, e.status) for e in errors] == [("http", 503)] * 2
    else:
        assert [e.kind for e in errors] == ["protocol", "protocol"]
        assert all(e.retryable for e in errors)
    assert elapsed < 2 * ATTEMPT
    assert stats.failed_requests == 2
