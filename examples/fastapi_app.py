"""A FastAPI service that forwards chat requests through the balancer (asyncio front-end).

The balancer opens with the app (its lifespan) and closes with it; every
endpoint awaits it like any asyncio library. Serve it with a config file::

    LLMLB_CONFIG=examples/config.toml uvicorn examples.fastapi_app:app

``python examples/fastapi_app.py`` runs it in-process against the simulator
(no keys, no network) and prints a few exchanges. Needs ``fastapi`` (and
``uvicorn`` to serve it); the library itself does not.
"""

from __future__ import annotations

import os
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

import msgspec
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

import llmlb_actors as llmlb
from llmlb_actors import aio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable


class Chat(BaseModel):
    prompt: str
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None


def _request(chat: Chat) -> llmlb.LLMRequest:
    try:
        return llmlb.LLMRequest(**chat.model_dump())
    except ValueError as exc:  # a field out of range: the client's mistake
        raise HTTPException(422, str(exc)) from None


def _failed(exc: llmlb.LoadBalancerError) -> HTTPException:
    if isinstance(exc, llmlb.BalancerClosedError | llmlb.OverloadedError):
        return HTTPException(503, exc.message)
    return HTTPException(502, str(exc))


def create_app(config: Callable[[], llmlb.BalancerConfig]) -> FastAPI:
    """The app; ``config()`` is read when it starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with aio.open_balancer(config()) as lb:
            app.state.lb = lb
            yield

    app = FastAPI(title="llmlb_actors gateway", lifespan=lifespan)

    @app.post("/v1/chat")
    async def chat(body: Chat, request: Request) -> dict[str, Any]:
        lb: aio.Balancer = request.app.state.lb
        try:
            resp = await lb.request(_request(body))
        except llmlb.LoadBalancerError as exc:
            raise _failed(exc) from None
        return {
            "content": resp.content,
            "provider": resp.provider,
            "model": resp.model,
            "attempts": resp.attempts,
            "usage": msgspec.to_builtins(resp.usage),
        }

    @app.post("/v1/chat/stream")
    async def chat_stream(body: Chat, request: Request) -> StreamingResponse:
        lb: aio.Balancer = request.app.state.lb
        stack = AsyncExitStack()
        try:
            # Failover happens here, before the first chunk: an error is still a status code.
            chunks = await stack.enter_async_context(lb.stream(_request(body)))
        except llmlb.LoadBalancerError as exc:
            raise _failed(exc) from None

        async def deltas() -> AsyncIterator[str]:
            async with stack:  # leaving it (a client gone, an error) closes the upstream
                try:
                    async for chunk in chunks:
                        yield chunk.delta
                except llmlb.LLMError as exc:  # broken after the first chunk: too late for a status
                    yield f"\n[stream broken: {exc.message}]"

        return StreamingResponse(deltas(), media_type="text/plain")

    @app.get("/v1/stats")
    async def stats(request: Request) -> dict[str, Any]:
        lb: aio.Balancer = request.app.state.lb
        return {
            "providers": {n: msgspec.to_builtins(s) for n, s in lb.get_stats().items()},
            "totals": msgspec.to_builtins(lb.get_totals()),
        }

    @app.get("/v1/health")
    async def health(request: Request) -> dict[str, bool]:
        lb: aio.Balancer = request.app.state.lb
        return await lb.health_check()

    return app


#: For ``uvicorn examples.fastapi_app:app``: the config file named by ``LLMLB_CONFIG``.
app = create_app(lambda: llmlb.load_config(os.environ["LLMLB_CONFIG"]))


def main() -> None:
    from fastapi.testclient import TestClient

    from llmlb_actors.sim import SimProvider, SimulatorThread

    simulated = [
        SimProvider(name="openai", protocol="openai"),
        SimProvider(name="claude", protocol="anthropic"),
    ]
    with SimulatorThread(simulated) as sim:
        sim.script("openai", ["503"])  # the first answer fails over
        config = llmlb.BalancerConfig(
            strategy="failover",
            providers=[sim.provider_config("openai"), sim.provider_config("claude")],
            retry_delay=0.01,
            health_check_interval=None,
        )
        with TestClient(create_app(lambda: config)) as client:
            answer = client.post("/v1/chat", json={"prompt": "Hello"}).json()
            print(f"POST /v1/chat -> {answer['provider']} after {answer['attempts']} attempts")
            text = client.post("/v1/chat/stream", json={"prompt": "A story"}).text
            print(f"POST /v1/chat/stream -> {text!r}")
            bad = client.post("/v1/chat", json={"prompt": "Hi", "temperature": 7})
            print(f"temperature 7 -> HTTP {bad.status_code}")
            print(f"GET /v1/health -> {client.get('/v1/health').json()}")
            totals = client.get("/v1/stats").json()["totals"]
            print(f"totals: {totals['requests']} requests, {totals['succeeded']} succeeded")


if __name__ == "__main__":
    main()
