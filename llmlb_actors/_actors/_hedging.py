"""Hedged requests: after a delay, a copy of a slow request goes to another provider.

With `BalancerConfig.hedge` set, every request runs here instead of the plain
request loop. A request is a *race* of attempts, each its own `HedgedCall` (so
each has its own reply slot, cancel scope and worker): the first attempt goes
out as usual; if nothing answered after the hedge delay (a percentile of recent
successful latencies across all providers, or fixed seconds), a copy goes to an
admissible provider that is not running the request, if the hedge budget has a
token; up to ``max_extra`` copies, one per further delay. The first success
wins; every other attempt is marked ``hedge_lost`` and cancelled, which closes
its connection and is counted at its provider as ``hedges_cancelled``, never as
a failure (its circuit and outlier record are untouched). A stream is a race
only until its first chunk; a losing attempt that already had its first chunk is
closed unread, so exactly one stream is ever delivered.

Failures while another attempt still runs are only noted; when the last running
attempt fails, the request loop's own retry policy (`RequestLoop.judge`: retry
budget, ``max_retries``, backoff) decides, and the hedge timer starts again for
the new attempt. Every attempt is tracked by the request loop, so shutdown ends
them all. Strictly private.
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import partial
from typing import TYPE_CHECKING, Protocol

import trio

from .._errors import LLMError, LoadBalancerError
from .._hedge import HedgeDelay
from .._models import LLMRequest, LLMResponse
from .._retry_budget import WindowBudget
from ._call import Call, Outcome, StreamHandle, Tries, answered, needs_of

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from .._hedge import Hedge
    from .provider import ProviderActor

__all__ = ["HedgeHost", "HedgedCall", "Hedging", "Race", "run_hedged"]

_NO_DEADLINE = nullcontext()
_NEVER = float("inf")


class Hedging:
    """What hedged requests share: the delay per kind of request, and the budget."""

    def __init__(self, hedge: Hedge) -> None:
        self.max_extra = hedge.max_extra
        # Whole answers and streams' first chunks have their own percentiles.
        self._delays = (HedgeDelay(hedge.after), HedgeDelay(hedge.after))
        self.budget = WindowBudget(hedge.budget)

    def delay(self, stream: bool) -> float | None:
        return self._delays[stream].delay()

    def observe(self, stream: bool, seconds: float) -> None:
        self._delays[stream].observe(seconds)


class HedgeHost(Protocol):
    """The request loop, as a hedged request sees it."""

    hedging: Hedging | None
    closed: bool

    @property
    def request_timeout(self) -> float | None: ...

    def admit(self, call: Call, start: float) -> None:
        """Count a new request whose first attempt is ``call``, and track it."""
        ...

    def track(self, call: Call) -> None:
        """Track another attempt of a request (shutdown ends it)."""
        ...

    def release(self, call: Call) -> None: ...

    def count_outcome(self, ok: bool) -> None: ...

    def judge(self, call: Call, errors: list[LLMError], tries: Tries) -> float: ...

    async def submit_again(self, call: Call) -> None: ...

    def count_retry(self, call: Call, tries: Tries) -> None: ...

    def check_needs(self, needs: int) -> None: ...

    def may_hedge(self, now: float) -> bool: ...

    def route_hedge(
        self, call: Call, exclude: Collection[str], pay: Callable[[], bool]
    ) -> ProviderActor | None: ...


class Race:
    """The attempts of one hedged request, and who won. Strictly private."""

    __slots__ = ("calls", "counts", "errors", "event", "winner", "woken")

    def __init__(self) -> None:
        self.calls: list[HedgedCall] = []
        self.counts: dict[str, int] = {}  # attempts per provider, all calls together
        self.errors: list[LLMError] = []
        self.winner: HedgedCall | None = None
        self.event: trio.Event | None = None
        self.woken = False

    def wake(self) -> None:
        self.woken = True
        if self.event is not None:
            self.event.set()

    async def wait_until(self, deadline: float) -> None:
        """Until an attempt resolves or ``deadline`` passes (a checkpoint either way)."""
        if self.woken:
            self.woken = False
            await trio.lowlevel.checkpoint()
            return
        self.event = event = trio.Event()
        with trio.move_on_at(deadline):
            await event.wait()
        self.event = None
        self.woken = False


class HedgedCall(Call):
    """One attempt of a hedged request: a `Call` that reports to its `Race`."""

    __slots__ = (
        "actor",
        "hedge_lost",
        "is_hedge",
        "overtaken",
        "race",
        "resolved_at",
        "sent_at",
    )

    def __init__(
        self, request: LLMRequest, race: Race, *, stream: bool, is_hedge: bool = False
    ) -> None:
        super().__init__(request, stream=stream)
        self.race = race
        self.is_hedge = is_hedge
        self.hedge_lost = False
        self.overtaken = False
        self.actor: ProviderActor | None = None  # where a hedge went (for hedges_won)
        self.sent_at = 0.0
        self.resolved_at = 0.0
        race.calls.append(self)

    # Every attempt of the race counts toward the request's per-provider caps and
    # toward "not tried yet" when a retry or a hedge picks a provider.
    def assign(self, provider: str) -> None:
        self.provider = provider
        self.assigned += 1
        counts = self.race.counts
        counts[provider] = counts.get(provider, 0) + 1

    def attempts_at(self, provider: str) -> int:
        return self.race.counts.get(provider, 0)

    def resolve(self, attempt: int, outcome: Outcome) -> bool:
        if not super().resolve(attempt, outcome):
            return False
        race = self.race
        if (
            race.winner is None
            and not self.hedge_lost
            and isinstance(outcome, LLMResponse | StreamHandle)
        ):
            race.winner = self
            self.resolved_at = trio.current_time()
            if self.is_hedge and self.actor is not None:
                self.actor.stats.hedges_won += 1
        race.wake()
        return True


async def run_hedged(
    host: HedgeHost, request: LLMRequest, *, stream: bool, timeout: float | None
) -> LLMResponse | StreamHandle:
    """One hedged request, from the first attempt to its one outcome."""
    hedging = host.hedging
    assert hedging is not None
    race = Race()
    primary = HedgedCall(request, race, stream=stream)
    if request.tools is not None or request.messages is not None:
        primary.needs |= needs_of(request)  # only some providers may take tools or images
        host.check_needs(primary.needs)
    start = trio.current_time()
    limit = timeout if timeout is not None else host.request_timeout
    if limit is not None:
        primary.deadline = start + limit  # what a quota wait is measured against
    host.admit(primary, start)
    outcome: LLMResponse | StreamHandle | None = None
    try:
        with _NO_DEADLINE if limit is None else trio.move_on_after(limit):
            outcome = await _run(host, hedging, race, primary, start)
        if outcome is None:
            raise LoadBalancerError(
                f"Request timed out after {limit:g}s ({len(race.errors)} attempts failed)",
                race.errors,
            )
    except BaseException:
        for call in race.calls:
            call.abandon()
        host.count_outcome(False)
        raise
    finally:
        for call in race.calls:
            host.release(call)
    host.count_outcome(True)
    return outcome


async def _run(
    host: HedgeHost, hedging: Hedging, race: Race, primary: HedgedCall, start: float
) -> LLMResponse | StreamHandle:
    stream = primary.stream
    tries = Tries()
    extra = 0
    await host.submit_again(primary)
    primary.sent_at = trio.current_time()
    running = [primary]
    hedge_at = _hedge_time(hedging, stream, extra, primary)
    while True:
        if race.winner is not None:
            return _finish(hedging, race, race.winner, running, start)
        for call in [c for c in running if c.outcome is not None]:
            running.remove(call)
            if running:
                # Another attempt is still running: note this one and wait for that.
                failed = call.outcome
                if isinstance(failed, LLMError):
                    race.errors.append(failed)
                elif isinstance(failed, LoadBalancerError):
                    race.errors.extend(failed.errors)
                continue
            wait = host.judge(call, race.errors, tries)  # raises when there is no next try
            if wait > 0:
                await trio.sleep(wait)
            await host.submit_again(call)
            host.count_retry(call, tries)  # it went (or failed unsent, uncounted)
            call.sent_at = trio.current_time()
            running.append(call)
            hedge_at = _hedge_time(hedging, stream, extra, call)
        if race.winner is not None:
            continue
        now = trio.current_time()
        if now < hedge_at:
            await race.wait_until(hedge_at)
            continue
        hedge_at = _NEVER
        hedge = HedgedCall(primary.request, race, stream=stream, is_hedge=True)
        hedge.deadline = primary.deadline
        hedge.needs = primary.needs
        hedge.next_attempt()
        busy = {c.provider for c in running if c.provider is not None}
        actor = host.route_hedge(hedge, busy, partial(host.may_hedge, now))
        if actor is None:
            race.calls.remove(hedge)  # nowhere to go, or no budget: no hedge this time
            continue
        actor.stats.hedges_sent += 1
        hedge.actor = actor
        hedge.sent_at = now
        host.track(hedge)
        running.append(hedge)
        extra += 1
        hedge_at = _hedge_time(hedging, stream, extra, hedge)


def _hedge_time(hedging: Hedging, stream: bool, extra: int, latest: HedgedCall) -> float:
    """When the next copy is due: a delay after the latest attempt went out."""
    if extra >= hedging.max_extra:
        return _NEVER
    delay = hedging.delay(stream)
    return _NEVER if delay is None else latest.sent_at + delay


def _finish(
    hedging: Hedging, race: Race, winner: HedgedCall, running: list[HedgedCall], start: float
) -> LLMResponse | StreamHandle:
    """The winner's outcome; every other attempt of the race is cancelled, never delivered."""
    for call in race.calls:
        if call is winner:
            continue
        lost = call.outcome
        if lost is None or isinstance(lost, LLMResponse | StreamHandle):
            call.hedge_lost = True
            call.overtaken = call.sent_at < winner.sent_at
            if isinstance(lost, StreamHandle):
                lost.close()  # it got its first chunk too late: closed unread
            else:
                call.abandon()
    hedging.observe(winner.stream, winner.resolved_at - winner.sent_at)
    outcome = winner.outcome
    if isinstance(outcome, StreamHandle):
        return outcome
    assert isinstance(outcome, LLMResponse)
    attempts = len(race.errors) + len([c for c in running if c.outcome is None or c is winner])
    return answered(winner, outcome, start, attempts=max(1, attempts))
