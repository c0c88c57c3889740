"""Test helpers for code that uses llmlb_actors (llmlb_actors' own tests use them too).

* `Script`: in-process providers whose answers you script per provider name:
  an answer, a delay, a hang, an `LLMError`, or a crash.
* `http_error`: the `LLMError` a real HTTP answer with that status would give
  (retryable or not, taking the provider out of rotation or not).
* `ZeroJitter`: a random source without jitter, so backoff waits and health
  probe spacing are exact (pass it as ``open_balancer(..., rng=ZeroJitter())``).
* `crash_provider`, `open_circuit`, `provider_instance`: reach one provider of
  a running balancer, to crash its actor, take it out of rotation as if it
  had failed, or look at the provider object it runs.

Everything here is meant for tests on trio's virtual clock
(``trio.testing.MockClock(autojump_threshold=0)``, or pytest-trio's
``autojump_clock`` fixture): delays cost no real time. For HTTP-level tests,
``llmlb_actors.sim`` is a loopback server that speaks every protocol.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, ClassVar

import trio

from ._models import LLMRequest, LLMResponse, StreamChunk, Usage
from .providers._base import BaseProvider
from .providers._status import error_for_status

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ._actors.provider import ProviderActor
    from ._balancer import Balancer
    from ._errors import LLMError

__all__ = [
    "Script",
    "ScriptedProvider",
    "Step",
    "ZeroJitter",
    "crash_provider",
    "http_error",
    "open_circuit",
    "provider_instance",
]

Step = str | float | BaseException
"""One scripted call: ``"ok"``, a delay in seconds (then ok), ``"hang"``, an
`LLMError` (the attempt fails), or any other exception (the actor crashes)."""


class Script:
    """Scripted answers for in-process providers, one queue per provider name.

    ::

        script = Script()
        script.add("a", http_error(503), 2.0, "hang")
        config = llmlb.ProviderConfig(name="a", provider=script.provider)

    Each call to a provider takes the next step of its queue; an empty queue
    answers ``"ok"``. An answer is ``"<name>:<prompt>"`` with model
    ``"scripted"``; a stream is the three chunks ``"a"``, ``"b"``, ``"c"``.
    ``calls`` counts the calls per provider name.
    """

    def __init__(self) -> None:
        self._steps: dict[str, deque[Step]] = {}
        self.calls: Counter[str] = Counter()
        self.provider: type[ScriptedProvider] = type(
            "ScriptedProvider", (ScriptedProvider,), {"script": self}
        )
        """The `BaseProvider` subclass to pass as ``ProviderConfig(provider=...)``."""

    def add(self, name: str, *steps: Step) -> None:
        """Append ``steps`` to the queue of the provider called ``name``."""
        self._steps.setdefault(name, deque()).extend(steps)

    def pending(self, name: str) -> int:
        """Steps not yet taken by ``name``."""
        return len(self._steps.get(name, ()))

    def clear(self) -> None:
        """Forget every queue and count."""
        self._steps.clear()
        self.calls.clear()

    async def next_step(self, name: str) -> None:
        """Take and play ``name``'s next step (what a `ScriptedProvider` call does)."""
        self.calls[name] += 1
        queue = self._steps.get(name)
        step: Step = queue.popleft() if queue else "ok"
        if step == "hang":
            await trio.sleep_forever()
        if isinstance(step, int | float):
            await trio.sleep(step)
        elif isinstance(step, BaseException):
            raise step
        elif step != "ok":
            raise ValueError(f"unknown scripted step {step!r}")


class ScriptedProvider(BaseProvider):
    """A provider that plays its `Script` (get a subclass from `Script.provider`)."""

    script: ClassVar[Script]

    async def make_request(self, request: LLMRequest) -> LLMResponse:
        await self.script.next_step(self.name)
        return LLMResponse(
            content=f"{self.name}:{request.prompt}",
            model="scripted",
            usage=Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3),
            finish_reason="stop",
        )

    @asynccontextmanager
    async def stream(self, request: LLMRequest) -> AsyncIterator[AsyncIterator[StreamChunk]]:
        await self.script.next_step(self.name)

        async def chunks() -> AsyncIterator[StreamChunk]:
            for word in ("a", "b", "c"):
                await trio.sleep(0.01)
                yield StreamChunk(delta=word)
            yield StreamChunk(finish_reason="stop", usage=Usage(total_tokens=3))

        yield chunks()


def http_error(
    status: int,
    *,
    message: str | None = None,
    retry_after: float | None = None,
    provider: str = "",
) -> LLMError:
    """The `LLMError` an HTTP answer with ``status`` gives, classified by the real rules.

    429, 408, 409 and 5xx are retryable; 401, 403 and 404 take the provider out
    of rotation; other statuses (400, 422) fail the request at once.
    """
    headers = {} if retry_after is None else {"retry-after": str(retry_after)}
    return error_for_status(provider, status, message or f"HTTP {status}", headers)


class ZeroJitter(random.Random):
    """A `random.Random` whose ``random()`` is always 0.

    Backoff waits hit their exact bound and health probes come exactly at
    ``0.9 x health_check_interval``, so tests can assert times exactly.
    """

    def random(self) -> float:
        return 0.0


def _actor(balancer: Balancer, name: str) -> ProviderActor:
    try:
        return balancer._supervisor.actors[name]
    except KeyError:
        raise KeyError(f"no provider named {name!r} in this balancer") from None


def crash_provider(balancer: Balancer, name: str, exc: BaseException | None = None) -> None:
    """Crash ``name``'s actor now, as if one of its workers raised ``exc``.

    The supervisor re-routes what it held and restarts it (or, past the
    restart limit, takes it out of rotation). The crash happens at the next
    scheduling point: ``await trio.testing.wait_all_tasks_blocked()`` to see
    its effects.

    Raises:
        KeyError: no provider has that name.
        RuntimeError: its actor is not running (dead, removed, or shut down).
    """
    actor = _actor(balancer, name)
    nursery = actor._nursery
    if nursery is None:
        raise RuntimeError(f"provider actor {name!r} is not running")
    error = exc if exc is not None else RuntimeError(f"crash injected into {name!r}")

    async def crash() -> None:
        raise error

    nursery.start_soon(crash)


def open_circuit(balancer: Balancer, name: str) -> None:
    """Take ``name`` out of rotation for its cool-down, as if it had just failed
    ``failure_threshold`` times in a row (a half-open trial follows)."""
    _actor(balancer, name).circuit.trip(trio.current_time(), "opened by llmlb_actors.testing")


def provider_instance(balancer: Balancer, name: str) -> BaseProvider:
    """The provider object ``name``'s actor runs now (a fresh one after each restart)."""
    return _actor(balancer, name).provider
