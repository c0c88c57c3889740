"""The trio-side configurations: raw httpx, llmlb_actors' transport, provider and balancer.

Every whole-response client does the same useful work per request: encode
the chat body with msgspec, send it, check the status, decode the reply
into a typed msgspec Struct (the balancer's adapter does exactly that).
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from ._common import MODEL, PROMPT, ChatBody, Completion
from ._loop_trio import closed_loop

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from llmlb_actors._balancer import Balancer

    from ._results import PointResult, PointSpec

__all__ = ["TRIO_CONFIGS", "balancer_config", "run_trio_point"]

_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Completion)
#: Not a real key; nginx and the simulator accept any.
FAKE_KEY = "sk-bench-not-a-real-key"
_HEADERS = [
    ("content-type", "application/json"),
    ("accept", "application/json"),
    ("authorization", f"Bearer {FAKE_KEY}"),
]


class _Client:
    """What a configuration gives the loop: the request coroutine and end-of-window details."""

    def __init__(
        self,
        one: Callable[[], Awaitable[Any]],
        extra: Callable[[], dict[str, Any]] | None = None,
        probe: Callable[[], dict[str, float]] | None = None,
    ) -> None:
        self.one = one
        self.extra = extra
        self.probe = probe


def _check(status: int, body: bytes) -> None:
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {body[:200]!r}")
    if not _DECODER.decode(body).choices:
        raise RuntimeError("no choices in the reply")


@asynccontextmanager
async def _httpx(spec: PointSpec) -> AsyncIterator[_Client]:
    import httpx

    c = spec.concurrency
    url = spec.upstream.chat_url(0)
    headers = dict(_HEADERS)
    limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(600.0)) as client:

        async def one() -> None:
            body = _ENCODER.encode(ChatBody.make())
            response = await client.post(url, content=body, headers=headers)
            _check(response.status_code, response.content)

        yield _Client(one)


@asynccontextmanager
async def _transport(spec: PointSpec) -> AsyncIterator[_Client]:
    from llmlb_actors._transport import HTTPRequest, TransportLimits, TrioTransport

    url = spec.upstream.chat_url(0)
    transport = TrioTransport(TransportLimits(max_connections=spec.concurrency))
    try:

        async def one() -> None:
            http_request = HTTPRequest("POST", url, _HEADERS, _ENCODER.encode(ChatBody.make()))
            response = await transport.request(http_request)
            _check(response.status, response.body)

        yield _Client(one)
    finally:
        await transport.aclose()


@asynccontextmanager
async def _raw(spec: PointSpec) -> AsyncIterator[_Client]:
    """Raw trio sockets and httptools, a bare connection stack: the upstream probe's client
    when wrk is not installed (the leanest Python client there is)."""
    import httptools

    target = spec.upstream.chat_url(0).split("/", 3)
    host, port = target[2].split(":")
    body = _ENCODER.encode(ChatBody.make())
    head = (
        f"POST /{target[3]} HTTP/1.1\r\nhost: {target[2]}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode()
    wire = head + body
    idle: list[trio.SocketStream] = []

    class _Done:
        complete = False
        parts: list[bytes]

        def __init__(self) -> None:
            self.parts = []

        def on_body(self, data: bytes) -> None:
            self.parts.append(data)

        def on_message_complete(self) -> None:
            self.complete = True

    async def one() -> None:
        stream = idle.pop() if idle else await trio.open_tcp_stream(host, int(port))
        try:
            await stream.send_all(wire)
            done = _Done()
            parser = httptools.HttpResponseParser(done)
            while not done.complete:
                data = await stream.receive_some(65536)
                if not data:
                    raise RuntimeError("connection closed")
                parser.feed_data(data)
            _check(parser.get_status_code(), b"".join(done.parts))
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        idle.append(stream)

    try:
        yield _Client(one)
    finally:
        for stream in idle:
            await trio.aclose_forcefully(stream)


def _provider_config(spec: PointSpec, index: int, **overrides: Any) -> Any:
    from llmlb_actors._config import ProviderConfig

    fields: dict[str, Any] = {
        "name": f"up-{index}",
        "provider": "openai-compatible",
        "base_url": spec.upstream.base_url(index),
        "model": MODEL,
        "api_key": FAKE_KEY,
        "max_concurrency": spec.concurrency,
    }
    fields.update(overrides)
    return ProviderConfig(**fields)


def _request() -> Any:
    from llmlb_actors._models import LLMRequest

    return LLMRequest(prompt=PROMPT)


@asynccontextmanager
async def _provider(spec: PointSpec) -> AsyncIterator[_Client]:
    """The adapter and transport without the actors: what the balancer wraps."""
    from llmlb_actors._transport import TransportLimits, TrioTransport
    from llmlb_actors.providers._http import HTTPProvider
    from llmlb_actors.providers.openai import OpenAICompatibleAdapter

    config = _provider_config(spec, 0)
    transport = TrioTransport(TransportLimits(max_connections=spec.concurrency))
    provider = HTTPProvider(config, OpenAICompatibleAdapter(config), transport)
    request = _request()
    try:

        async def one() -> None:
            await provider.make_request(request)

        yield _Client(one)
    finally:
        await transport.aclose()


def balancer_config(
    spec: PointSpec, providers: int, *, transport: str = "default", **provider_fields: Any
) -> Any:
    """Round-robin over ``providers`` upstream ports, nothing throttling below C."""
    from llmlb_actors._config import BalancerConfig

    return BalancerConfig(
        strategy="round-robin",
        providers=[_provider_config(spec, i, **provider_fields) for i in range(providers)],
        health_check_interval=None,  # no probes mixed into the measured traffic
        global_timeout=300.0,
        queue_size=max(1024, spec.concurrency),
        transport=transport,
    )


def _balancer_details(lb: Balancer) -> dict[str, Any]:
    """Totals at the end of the window: no failures, no retries."""
    stats = lb.get_stats().values()
    totals = lb.get_totals()
    return {
        "failed_attempts": sum(s.failed_requests for s in stats),
        "retries": totals.retries,
    }


def _balancer_probe(lb: Balancer) -> Callable[[], dict[str, float]]:
    """Where the requests in flight are, sampled during the window: the achieved
    concurrency at the HTTP layer (running attempts) versus waiting in mailboxes."""
    actors = [lb._supervisor.actors[p.name] for p in lb.config.providers]
    dispatcher = lb._dispatcher

    def probe() -> dict[str, float]:
        return {
            "attempts_running": sum(a.active for a in actors),
            "mailbox_queued": sum(a.queued for a in actors),
            "dispatcher_queued": dispatcher.queue_length,
        }

    return probe


@asynccontextmanager
async def _balancer(spec: PointSpec, providers: int, transport: str) -> AsyncIterator[_Client]:
    from llmlb_actors._balancer import open_balancer

    request = _request()
    async with open_balancer(balancer_config(spec, providers, transport=transport)) as lb:

        async def one() -> None:
            await lb.request(request)

        yield _Client(one, lambda: _balancer_details(lb), _balancer_probe(lb))


_STREAM_PROVIDER = {"openai": "openai-compatible", "anthropic": "anthropic", "gemini": "gemini"}


def _stream_fields(spec: PointSpec, protocol: str, index: int) -> dict[str, Any]:
    """A provider whose streamed answers are ``protocol``'s fixed 64-delta SSE body."""
    from ._sse_bodies import SSE_MODELS

    return {
        "provider": _STREAM_PROVIDER[protocol],
        "base_url": spec.upstream.sse_base_url(protocol, index),
        "model": SSE_MODELS[protocol],
    }


async def _consume(chunks: AsyncIterator[Any], t0: float) -> tuple[float | None, int]:
    """Read a stream to its end: time to the first text delta, and how many deltas came."""
    perf = time.perf_counter
    ttfc: float | None = None
    count = 0
    async for chunk in chunks:
        if chunk.delta:
            if ttfc is None:
                ttfc = perf() - t0
            count += 1
    return ttfc, count


@asynccontextmanager
async def _balancer_stream(
    spec: PointSpec, providers: int, protocol: str = "openai"
) -> AsyncIterator[_Client]:
    """``lb.stream`` over ``providers`` round-robin, each streaming ``protocol``'s body."""
    from llmlb_actors._balancer import open_balancer
    from llmlb_actors._config import BalancerConfig

    request = _request()
    perf = time.perf_counter
    base = balancer_config(spec, providers)
    config = BalancerConfig(
        strategy=base.strategy,
        providers=[
            _provider_config(spec, i, **_stream_fields(spec, protocol, i)) for i in range(providers)
        ],
        health_check_interval=None,
        global_timeout=base.global_timeout,
        queue_size=base.queue_size,
    )
    async with open_balancer(config) as lb:

        async def one() -> tuple[float | None, int]:
            t0 = perf()
            async with lb.stream(request) as chunks:
                return await _consume(chunks, t0)

        yield _Client(one, lambda: _balancer_details(lb), _balancer_probe(lb))


@asynccontextmanager
async def _provider_stream(spec: PointSpec) -> AsyncIterator[_Client]:
    """``HTTPProvider.stream`` alone (adapter + transport, no actors): the floor under
    the balancer's streams."""
    from llmlb_actors._transport import TransportLimits, TrioTransport
    from llmlb_actors.providers._http import HTTPProvider
    from llmlb_actors.providers.openai import OpenAICompatibleAdapter

    config = _provider_config(spec, 0, **_stream_fields(spec, "openai", 0))
    transport = TrioTransport(TransportLimits(max_connections=spec.concurrency))
    provider = HTTPProvider(config, OpenAICompatibleAdapter(config), transport)
    request = _request()
    perf = time.perf_counter
    try:

        async def one() -> tuple[float | None, int]:
            t0 = perf()
            async with provider.stream(request) as chunks:
                return await _consume(chunks, t0)

        yield _Client(one)
    finally:
        await transport.aclose()


TRIO_CONFIGS: dict[str, Callable[[PointSpec], Any]] = {
    "httpx": _httpx,
    "raw-trio-httptools": _raw,
    "llmlb-transport": _transport,
    "llmlb-provider": _provider,
    "llmlb-1": lambda spec: _balancer(spec, 1, "default"),
    "llmlb-3": lambda spec: _balancer(spec, 3, "default"),
    "llmlb-1-httpx": lambda spec: _balancer(spec, 1, "httpx"),
    "llmlb-stream": lambda spec: _balancer_stream(spec, 1),
    "llmlb-stream-3": lambda spec: _balancer_stream(spec, 3),
    "llmlb-stream-3-anthropic": lambda spec: _balancer_stream(spec, 3, "anthropic"),
    "llmlb-stream-3-gemini": lambda spec: _balancer_stream(spec, 3, "gemini"),
    "llmlb-stream-provider": _provider_stream,
}


async def _run(spec: PointSpec) -> PointResult:
    async with TRIO_CONFIGS[spec.config](spec) as client:
        return await closed_loop(spec, client.one, client.extra, client.probe)


def run_trio_point(spec: PointSpec) -> PointResult:
    """Measure one trio configuration in this process."""
    return trio.run(_run, spec)
