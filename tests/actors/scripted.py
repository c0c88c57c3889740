"""A scripted in-process provider for actor tests (a real `BaseProvider` subclass)."""

from __future__ import annotations

from collections import deque
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

from llmlb_actors import BaseProvider, LLMError, LLMRequest, LLMResponse, StreamChunk, Usage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

Step = str | float | LLMError | BaseException

SCRIPTS: dict[str, deque[Step]] = {}
CALLS: dict[str, int] = {}


def script(name: str, *steps: Step) -> None:
    SCRIPTS.setdefault(name, deque()).extend(steps)


def reset() -> None:
    SCRIPTS.clear()
    CALLS.clear()


class Scripted(BaseProvider):
    """Each call pops one step: "ok", a delay in seconds (then ok), "hang", an LLMError
    (raised), or any other exception (a crash). An empty script answers "ok"."""

    async def _step(self) -> None:
        CALLS[self.name] = CALLS.get(self.name, 0) + 1
        queue = SCRIPTS.get(self.name)
        step: Step = queue.popleft() if queue else "ok"
        if step == "hang":
            await trio.sleep_forever()
        if isinstance(step, int | float):
            await trio.sleep(step)
        elif isinstance(step, BaseException):
            raise step

    async def make_request(self, request: LLMRequest) -> LLMResponse:
        await self._step()
        return LLMResponse(
            content=f"{self.name}:{request.prompt}",
            model="scripted",
            usage=Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3),
            finish_reason="stop",
        )

    @asynccontextmanager
    async def stream(self, request: LLMRequest) -> AsyncIterator[AsyncIterator[StreamChunk]]:
        await self._step()

        async def chunks() -> AsyncIterator[StreamChunk]:
            for word in ("a", "b", "c"):
                await trio.sleep(0.01)
                yield StreamChunk(delta=word)
            yield StreamChunk(finish_reason="stop", usage=Usage(total_tokens=3))

        yield chunks()


def err(status: int, retryable: bool = True, **kw: object) -> LLMError:
    return LLMError(f"HTTP {status}", status=status, retryable=retryable, **kw)  # type: ignore[arg-type]
