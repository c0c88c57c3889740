"""The asyncio-side configurations: raw aiohttp (the reference) and LiteLLM's Router.

This module never imports trio or llmlb_actors, so their memory does not
count against these clients' peak RSS. The closed loop mirrors
`_loop_trio.closed_loop` exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import msgspec

from ._common import MODEL, PROMPT, ChatBody, Completion
from ._profiling import WindowProfiler
from ._results import PointResult, PointSpec, Recorder

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

__all__ = ["ASYNCIO_CONFIGS", "LITELLM_OFFLINE_ENV", "run_asyncio_point"]

_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Completion)
FAKE_KEY = "sk-bench-not-a-real-key"
_HEADERS = {
    "content-type": "application/json",
    "accept": "application/json",
    "authorization": f"Bearer {FAKE_KEY}",
}

#: Set before LiteLLM is imported: the bundled cost map and beta-header table instead of
#: fetching them, no telemetry, quiet logs. Nothing leaves loopback.
LITELLM_OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_OFFLINE_MODE": "true",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "true",
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOG": "ERROR",
    "LITELLM_SUPPRESS_STARTUP_OUTPUT": "true",
    "DISABLE_ADMIN_UI": "True",
    "NO_PROXY": "127.0.0.1,localhost",
}


async def closed_loop(
    spec: PointSpec,
    one: Callable[[], Awaitable[Any]],
    extra: Callable[[], dict[str, Any]] | None = None,
) -> PointResult:
    rec = Recorder(spec)
    warm = asyncio.Event()
    full = asyncio.Event()
    rec.on_warm = warm.set
    rec.on_full = full.set
    perf = time.perf_counter

    async def worker() -> None:
        while True:
            rec.started()
            t0 = perf()
            try:
                stream = await one()
            except Exception as exc:
                rec.finished(perf() - t0, exc, None)
                await asyncio.sleep(0)  # a failure raised before any await must not spin
            else:
                rec.finished(perf() - t0, None, stream)

    async def sample() -> None:
        while True:
            await asyncio.sleep(0.01)
            rec.sample()

    profiler = WindowProfiler(spec.profile)
    tasks = [asyncio.create_task(worker()) for _ in range(spec.concurrency)]
    try:
        await asyncio.sleep(spec.warmup_s)
        await warm.wait()
        profiler.start()
        rec.start_window()
        tasks.append(asyncio.create_task(sample()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(full.wait(), spec.measure_s)
        rec.end_window()
        profiler.stop()
        details = extra() if extra is not None else {}
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return rec.result(details)


class _Client:
    def __init__(self, one: Callable[[], Awaitable[Any]]) -> None:
        self.one = one


def _check(status: int, body: bytes) -> None:
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {body[:200]!r}")
    if not _DECODER.decode(body).choices:
        raise RuntimeError("no choices in the reply")


@asynccontextmanager
async def _aiohttp(spec: PointSpec) -> AsyncIterator[_Client]:
    import aiohttp

    url = spec.upstream.chat_url(0)
    connector = aiohttp.TCPConnector(limit=spec.concurrency)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> None:
            body = _ENCODER.encode(ChatBody.make())
            async with session.post(url, data=body, headers=_HEADERS) as response:
                _check(response.status, await response.read())

        yield _Client(one)


class _Delta(msgspec.Struct):
    content: str | None = None


class _ChunkChoice(msgspec.Struct):
    delta: _Delta | None = None


class _Chunk(msgspec.Struct):
    choices: list[_ChunkChoice] = []


_CHUNK = msgspec.json.Decoder(_Chunk)


@asynccontextmanager
async def _aiohttp_stream(spec: PointSpec) -> AsyncIterator[_Client]:
    """Raw SSE over aiohttp: split lines, decode each ``data:`` event with msgspec."""
    import aiohttp

    url = spec.upstream.sse_base_url("openai", 0) + "/chat/completions"
    headers = {**_HEADERS, "accept": "text/event-stream"}
    connector = aiohttp.TCPConnector(limit=spec.concurrency)
    perf = time.perf_counter
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=600)
    ) as session:

        async def one() -> tuple[float | None, int]:
            t0 = perf()
            ttfc: float | None = None
            count = 0
            body = _ENCODER.encode(ChatBody.make(stream=True))
            async with session.post(url, data=body, headers=headers) as response:
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}")
                async for line in response.content:
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        break
                    chunk = _CHUNK.decode(data)
                    if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
                        if ttfc is None:
                            ttfc = perf() - t0
                        count += 1
            return ttfc, count

        yield _Client(one)


@asynccontextmanager
async def _litellm(spec: PointSpec) -> AsyncIterator[_Client]:
    """LiteLLM's Router over two deployments of the same OpenAI-compatible upstream."""
    os.environ.update(LITELLM_OFFLINE_ENV)  # before the import: it fetches a cost map otherwise
    import litellm
    from litellm.router import Router

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    deployments = [
        {
            "model_name": "bench",
            "litellm_params": {
                "model": f"openai/{MODEL}",
                "api_base": spec.upstream.base_url(i),
                "api_key": FAKE_KEY,
            },
        }
        for i in range(2)
    ]
    router = Router(model_list=deployments, num_retries=0, timeout=600)
    messages = [{"role": "user", "content": PROMPT}]

    async def one() -> None:
        response = await router.acompletion(model="bench", messages=messages)
        if not response.choices:
            raise RuntimeError("no choices in the reply")

    yield _Client(one)


ASYNCIO_CONFIGS: dict[str, Callable[[PointSpec], Any]] = {
    "aiohttp": _aiohttp,
    "aiohttp-stream": _aiohttp_stream,
    "litellm": _litellm,
}


async def _run(spec: PointSpec) -> PointResult:
    async with ASYNCIO_CONFIGS[spec.config](spec) as client:
        return await closed_loop(spec, client.one)


def run_asyncio_point(spec: PointSpec) -> PointResult:
    """Measure one asyncio configuration in this process."""
    return asyncio.run(_run(spec))
