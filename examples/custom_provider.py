"""A provider you write yourself, balanced alongside a built-in one.

Runs against the loopback simulator: no API keys, no network. `PocketCalculator`
stands in for any in-house model or API the library does not know: subclass
`BaseProvider`, implement `make_request` (and `stream` if it can stream), raise
`LLMError` for failures. The balancer gives it everything the built-in
providers get: strategies, retries and failover, health, stats, and it can be
added while the balancer runs.
"""

from __future__ import annotations

import operator
import re
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

import llmlb_actors as llmlb
from llmlb_actors.sim import SimProvider, open_simulator

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Callable

_SUM = re.compile(r"(-?\d+(?:\.\d+)?)\s*([-+*/])\s*(-?\d+(?:\.\d+)?)")
_OPS: dict[str, Callable[[float, float], float]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
}


class PocketCalculator(llmlb.BaseProvider):
    """An offline "model" that answers arithmetic questions, whole or word by word.

    Every third request fails with a retryable error, the way a real backend
    sometimes answers 503: the balancer then retries on another provider.
    """

    def __init__(self, config: llmlb.ProviderConfig) -> None:
        super().__init__(config)
        self.calls = 0

    def _answer(self, request: llmlb.LLMRequest) -> str:
        question = request.as_messages()[-1].content
        match = _SUM.search(question)
        if match is None:
            return "I only know arithmetic, like 6 * 7."
        left, op, right = match.groups()
        try:
            value = _OPS[op](float(left), float(right))
        except ZeroDivisionError:
            return "Division by zero is undefined."
        return f"{left} {op} {right} = {value:g}"

    def _usage(self, request: llmlb.LLMRequest, answer: str) -> llmlb.Usage:
        prompt = sum(len(m.content.split()) for m in request.as_messages())
        completion = len(answer.split())
        return llmlb.Usage(
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
        )

    async def make_request(self, request: llmlb.LLMRequest) -> llmlb.LLMResponse:
        self.calls += 1
        if self.calls % 3 == 0:
            raise llmlb.LLMError(
                "the calculator is busy",
                provider=self.name,
                status=503,
                retryable=True,
                kind="provider",
            )
        await trio.sleep(0.001)  # a real provider awaits its API here
        answer = self._answer(request)
        return llmlb.LLMResponse(
            content=answer,
            model="pocket-calc-1",
            usage=self._usage(request, answer),
            finish_reason="stop",
        )

    @asynccontextmanager
    async def stream(
        self, request: llmlb.LLMRequest
    ) -> AsyncIterator[AsyncIterator[llmlb.StreamChunk]]:
        answer = self._answer(request)

        async def chunks() -> AsyncGenerator[llmlb.StreamChunk, None]:
            for i, word in enumerate(answer.split(" ")):
                await trio.sleep(0.005)
                yield llmlb.StreamChunk(delta=word if i == 0 else " " + word, model="pocket-calc-1")
            yield llmlb.StreamChunk(
                finish_reason="stop", usage=self._usage(request, answer), model="pocket-calc-1"
            )

        generator = chunks()
        try:
            yield generator
        finally:
            await generator.aclose()  # leaving early stops the "upstream" at once

    async def check_health(self) -> bool:
        return True


async def main() -> None:
    simulated = [SimProvider(name="openai", protocol="openai")]
    async with open_simulator(simulated) as sim:
        config = llmlb.BalancerConfig(
            strategy="round-robin", providers=[sim.provider_config("openai")], retry_delay=0.01
        )
        async with llmlb.open_balancer(config) as lb:
            # Added at runtime, like any provider; no model or key needed for a custom class.
            await lb.add_provider(
                llmlb.ProviderConfig(name="calculator", provider=PocketCalculator)
            )

            questions = ["6 * 7?", "10 / 4?", "2 + 2?", "1 / 0?", "9 - 12?", "3 * 3?"]
            for question in questions:
                resp = await lb.request(llmlb.LLMRequest(prompt=f"What is {question}"))
                print(
                    f"What is {question:<8} -> {resp.provider:<10} attempts={resp.attempts} "
                    f"{resp.content!r}"
                )
            # The calculator's third call failed; the balancer retried it on openai.
            assert (resp.provider, resp.attempts) == ("openai", 2), resp

            # Two streams: round-robin sends one to each provider; the calculator's goes
            # through its own `stream`, chunk by chunk.
            for _ in range(2):
                async with lb.stream(llmlb.LLMRequest(prompt="What is 1.5 * 4?")) as chunks:
                    parts = [chunk async for chunk in chunks]
                print(
                    f"streamed by {parts[-1].provider:<10} {''.join(p.delta for p in parts)!r} "
                    f"({len(parts)} chunks, finish={parts[-1].finish_reason})"
                )

            print(f"health: {await lb.health_check()}")
            for name, stats in lb.get_stats().items():
                print(
                    f"{name}: {stats.successful_requests} ok, {stats.failed_requests} failed, "
                    f"{stats.total_tokens} tokens"
                )


if __name__ == "__main__":
    trio.run(main)
