"""The provider actor: one per provider, with its own mailbox, workers, health loop and stats."""

from __future__ import annotations

import logging
import math
from collections import deque
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from .._circuit import Circuit
from .._config import ProviderState
from .._errors import LLMError
from .._models import LLMResponse, StreamChunk, Usage
from .._outlier import Ejection
from .._peak_ewma import PeakEwma
from .._quota._observe import install as install_observation_slot
from .._secrets import Redactor
from .._stats import ProviderHealth, ProviderStats, StatsRecorder
from .._transport._base import ON_SEND
from ._call import NEEDS_IMAGES, NEEDS_STREAM, NEEDS_TOOLS, Call, Reroute, StreamHandle
from ._expiry import AttemptTimer

if TYPE_CHECKING:
    import random
    from collections.abc import AsyncGenerator, AsyncIterator, Callable

    from .._config import BalancerConfig, ProviderConfig
    from .._models import LLMRequest
    from .._quota._gate import QuotaGate
    from .._quota._observe import ObservationSlot
    from .._quota._types import Observation
    from ..providers._base import BaseProvider

__all__ = ["ProviderActor"]

log = logging.getLogger("llmlb_actors")


class ProviderActor:
    """Runs the attempts for one provider.

    Its mailbox is a bounded memory channel filled by the dispatcher. Workers
    (at most ``max_concurrency``, spawned on demand) take calls from it, so
    the concurrency limit costs nothing per request. Each worker runs its
    attempts in one cancel scope whose deadline is the running attempt's, and
    which the caller can cancel; a scope that fired is replaced. An exception
    other than `LLMError` escaping a worker crashes the actor: the supervisor
    re-routes what it held and restarts it. Strictly private.
    """

    def __init__(
        self,
        provider_config: ProviderConfig,
        index: int,
        balancer_config: BalancerConfig,
        factory: Callable[[ProviderConfig], BaseProvider],
        rng: random.Random,
        on_capacity: Callable[[], None],
        on_health_failure: Callable[[ProviderActor, float], None] | None = None,
        quota: QuotaGate | None = None,
    ) -> None:
        self.provider_config = config = provider_config
        self.name = config.name
        self.index = index
        self.weight = float(config.weight)
        self.balancer_config = balancer_config
        self._factory = factory
        self._rng = rng
        self._on_capacity = on_capacity
        self._on_health_failure = on_health_failure
        self.provider: BaseProvider = factory(config)
        # What calls it may take (NEEDS_* bits): the dispatcher's one capability check.
        self.accepts = (
            (NEEDS_STREAM if self.provider.supports_streaming else 0)
            | (NEEDS_TOOLS if self.provider.supports_tools else 0)
            | (NEEDS_IMAGES if self.provider.supports_images else 0)
        )
        self.timeout = (
            config.timeout if config.timeout is not None else balancer_config.global_timeout
        )
        self.max_attempts = None if config.max_retries is None else config.max_retries + 1
        self.mailbox_size = config.mailbox_size or config.max_concurrency
        self.mailbox_send, self.mailbox_recv = trio.open_memory_channel[Call](self.mailbox_size)
        self.queued = 0
        self.active = 0
        self.held: set[Call] = set()
        self.circuit = Circuit(balancer_config.failure_threshold, balancer_config.cooldown)
        self.stats = StatsRecorder()
        self.peak = PeakEwma(balancer_config.latency_decay)
        # Failures that say something about the provider (not cancellations, not the
        # request's own 400/422): what outlier detection compares with successes.
        self.health_failures = 0
        self.ejection = Ejection()
        self.retry_after_until = float("-inf")
        # No attempt before this: the later of a pending Retry-After and an ejection.
        # One attribute, so that `available` costs the hot path nothing more.
        self.not_before = float("-inf")
        self.restart_times: deque[float] = deque()
        self.restarts = 0
        self.removed = False
        self.dead_reason: str | None = None
        self._refusal: LLMError | None = None
        self._idle_waiter: trio.Event | None = None  # made only while a removal drains
        self.stopped = trio.Event()
        self.redact = Redactor.for_provider(config, balancer_config)
        self._nursery: trio.Nursery | None = None
        self._timer: AttemptTimer | None = None  # while running: cuts timed-out attempts
        self._workers = 0
        self._idle_workers = 0
        self.quota = quota

    # -- what the dispatcher and strategies read ---------------------------------

    @property
    def in_flight(self) -> int:
        return self.queued + self.active

    @property
    def in_rotation(self) -> bool:
        return not self.removed and self.dead_reason is None

    @property
    def is_healthy(self) -> bool:
        return self.in_rotation and self.circuit.state == "closed"

    def available(self, now: float) -> bool:
        return now >= self.not_before and self.circuit.available(now)

    def available_in_panic(self, now: float) -> bool:
        """Available if ejections are ignored (the panic threshold)."""
        return now >= self.retry_after_until and self.circuit.available(now)

    def eject(self, now: float, reason: str) -> float:
        """Out of rotation as an outlier from ``now``; returns until when."""
        self.ejection.eject(now, reason)
        self.not_before = max(self.not_before, self.ejection.until)
        log.warning("provider %s ejected: %s", self.name, self.ejection.reason)
        return self.ejection.until

    @property
    def refusal(self) -> LLMError | None:
        """The 401/403/404 that took this provider out, while its circuit is still open
        for it: retrying there cannot help until the cool-down's trial says otherwise."""
        return self._refusal if self.circuit.state != "closed" else None

    def snapshot(self) -> ProviderState:
        return ProviderState(
            name=self.name,
            config=self.provider_config,
            index=self.index,
            weight=self.weight,
            is_healthy=self.is_healthy,
            circuit_state=self.circuit.state,
            in_flight=self.in_flight,
            average_latency_ms=(self.peak.cost(trio.current_time()) or 0.0) * 1000.0,
            consecutive_failures=self.circuit.failures,
            total_requests=self.stats.total,
        )

    def enqueue(self, call: Call, now: float) -> None:
        """Called by the dispatcher only, once it saw room in the mailbox."""
        call.assign(self.name)
        self.circuit.on_dispatch(now)
        self.queued += 1
        self.mailbox_send.send_nowait(call)

    def statistics(self) -> ProviderStats:
        s = self.stats
        p50, p95, p99 = s.percentiles()
        reason = self.dead_reason or ("removed" if self.removed else None)
        if reason is None and self.circuit.state != "closed":
            reason = self.circuit.reason
        now = trio.current_time()
        ejected = self.ejection.active(now)
        if reason is None and ejected:
            reason = f"ejected: {self.ejection.reason}"
        return ProviderStats(
            name=self.name,
            protocol=self.provider_config.protocol_name,
            total_requests=s.total,
            successful_requests=s.successful,
            failed_requests=s.failed,
            cancelled_requests=s.cancelled,
            retries=s.retries,
            average_response_time=s.average_ms,
            p50_ms=p50,
            p95_ms=p95,
            p99_ms=p99,
            is_healthy=self.is_healthy and not ejected,
            in_rotation=self.in_rotation,
            last_request_time=s.last_request_time,
            in_flight=self.in_flight,
            queued=self.queued,
            prompt_tokens=s.prompt_tokens,
            completion_tokens=s.completion_tokens,
            total_tokens=s.total_tokens,
            circuit_state=self.circuit.state,
            consecutive_failures=self.circuit.failures,
            restarts=self.restarts,
            last_error=s.last_error,
            out_of_rotation_reason=reason,
            streams_started=s.streams_started,
            streams_completed=s.streams_completed,
            streams_failed=s.streams_failed,
            average_ttft_ms=s.average_ttft_ms,
            latency_cost_ms=(self.peak.cost(now) or 0.0) * 1000.0,
            hedges_sent=s.hedges_sent,
            hedges_won=s.hedges_won,
            hedges_cancelled=s.hedges_cancelled,
            ejections=self.ejection.ejections,
            ejection_reason=self.ejection.reason,
            **self._quota_statistics(),
        )

    def _quota_statistics(self) -> dict[str, Any]:
        config = self.provider_config
        out: dict[str, Any] = {
            "rpm": config.rpm,
            "tpm": config.tpm,
            "rpd": config.rpd,
            "tpd": config.tpd,
            "throttled": self.stats.throttled,
            "rate_limited": self.stats.rate_limited,
        }
        if self.quota is not None:
            view = self.quota.store.view(self.name, trio.current_time())
            out.update(
                learned_rpm=view.learned_rpm,
                learned_tpm=view.learned_tpm,
                remaining_requests=view.remaining_requests,
                remaining_tokens=view.remaining_tokens,
                refill_in=view.refill_in,
                quota_reason=view.reason,
            )
        return out

    # -- lifetime ------------------------------------------------------------------

    async def run(self, on_ready: Callable[[], None]) -> None:
        """Run until cancelled; an unexpected exception escapes (the supervisor restarts us)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._workers = 0
                self._idle_workers = 0
                self._timer = AttemptTimer()
                nursery.start_soon(self._timer.run)
                self._spawn_worker()
                if self.balancer_config.health_check_interval is not None:
                    nursery.start_soon(self._health_loop)
                on_ready()
        finally:
            self._nursery = None
            self._timer = None

    def stop(self) -> None:
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def renew_provider(self) -> BaseProvider:
        """A fresh provider object after a crash; returns the old one for closing."""
        old = self.provider
        self.provider = self._factory(self.provider_config)
        return old

    def _spawn_worker(self) -> None:
        assert self._nursery is not None
        self._workers += 1
        self._idle_workers += 1  # idle from now on: it will take the next call
        self._nursery.start_soon(self._worker)

    async def _worker(self) -> None:
        # One cancel scope serves every attempt this worker runs, its deadline moved
        # per attempt: entering a scope costs several times what moving a deadline
        # does, and per attempt it would be the actor layer's largest cost. A scope
        # that fired (an attempt timed out or was abandoned) is replaced.
        recv = self.mailbox_recv
        running = _Running()
        if self.quota is not None:
            running.slot = install_observation_slot()
            running.quota = self.quota
            ON_SEND.set(running.on_send)
        while True:
            with trio.CancelScope() as scope:
                while True:
                    try:
                        call = await recv.receive()
                    except (trio.EndOfChannel, trio.ClosedResourceError):
                        return
                    self._idle_workers -= 1
                    self.queued -= 1
                    self._on_capacity()
                    # Keep one idle worker ready, plus one per call waiting beyond the
                    # idle ones, spawned at once: a spawned worker only starts on the
                    # next scheduler pass, so spawning one per receive would ramp a
                    # burst up by one attempt per pass, far below max_concurrency.
                    missing = min(
                        self.queued + 1 - self._idle_workers,
                        self.provider_config.max_concurrency - self._workers,
                    )
                    for _ in range(missing):
                        self._spawn_worker()
                    if not call.abandoned:
                        await self._attempt(call, scope, running)
                    elif call.reservation is not None:
                        self._settle_quota(call, None, None)  # never sent: refund
                    # An idle worker must not keep its last call (and its response) alive.
                    del call
                    self._idle_workers += 1
                    self._maybe_idle()
            # The scope fired: during an attempt (settle it now), or during an idle
            # wait (a stale deadline of the last attempt: nothing to do).
            if running.call is not None:
                self._settle_interrupted(running)
                self._idle_workers += 1
                self._maybe_idle()

    def _maybe_idle(self) -> None:
        waiter = self._idle_waiter
        if waiter is not None and self.active == 0 and self.queued == 0:
            self._idle_waiter = None
            waiter.set()

    async def wait_drained(self) -> None:
        """Return once no attempt runs here any more, or the actor has stopped."""
        while self.active and not self.stopped.is_set():
            if self._idle_waiter is None:
                self._idle_waiter = trio.Event()
            await self._idle_waiter.wait()

    def release_drain(self) -> None:
        """The actor stopped: a removal waiting in `wait_drained` must not wait on."""
        waiter = self._idle_waiter
        if waiter is not None:
            self._idle_waiter = None
            waiter.set()

    # -- one attempt -------------------------------------------------------------------

    async def _attempt(self, call: Call, scope: trio.CancelScope, running: _Running) -> None:
        """Run one attempt in the worker's ``scope``.

        If the scope fires (deadline, or the caller abandoned the call),
        `trio.Cancelled` leaves this method and the worker settles the attempt
        from ``running``.
        """
        attempt = call.attempt
        self.held.add(call)
        self.active += 1
        start = trio.current_time()
        call.scope = scope
        stream = _StreamState() if call.stream else None
        running.start(call, attempt, start, stream)
        # The request's overall deadline cuts the attempt too: the caller waits for it
        # without a cancel scope of its own on the happy path (see RequestLoop.run).
        deadline = min(start + self.timeout, call.deadline)
        timer = self._timer
        if stream is None and timer is not None and timer.watch(deadline, running):
            if scope.deadline != math.inf:  # an earlier attempt's must not cut this one
                scope.deadline = math.inf
        else:
            scope.deadline = deadline
        if running.slot is not None:
            running.slot.observation = None
        quota = self.quota
        if quota is not None and quota.unconfirmed(call) and not await quota.confirm(call, start):
            # A shared budget refused what local reads promised (another balancer got
            # there first): nothing was sent; the dispatcher routes the call again.
            self.held.discard(call)
            self.active -= 1
            running.clear()
            call.scope = None
            if self.circuit.state == "half-open":
                self.circuit.record_neutral()
            call.resolve(attempt, Reroute("quota", counted=False))
            return
        response: LLMResponse | None = None
        error: LLMError | None = None
        try:
            if stream is not None:
                await self._stream(call, attempt, scope, start, stream)
            else:
                response = await self.provider.make_request(call.request)
                if not isinstance(response, LLMResponse):
                    raise TypeError(
                        f"{type(self.provider).__name__}.make_request returned "
                        f"{type(response).__name__}, not LLMResponse"
                    )
        except LLMError as exc:
            error = exc
        finally:
            # On a crash or shutdown the caller must see a broken stream, not a clean end.
            if stream is not None and stream.handle is not None:
                stream.handle.end()
        slot = running.slot
        running.clear()
        call.scope = None  # from now on the caller's abandon must not reach this worker
        if slot is not None and (call.reservation is not None or slot.observation is not None):
            usage = stream.usage if stream is not None else response.usage if response else None
            self._settle_quota(call, usage, slot.take())
        self._settle(call, attempt, start, response, error, stream, interrupted=False)

    def _settle_interrupted(self, running: _Running) -> None:
        call = running.call
        assert call is not None
        attempt, start, stream = running.attempt, running.started, running.stream
        slot = running.slot
        running.clear()
        call.scope = None
        if slot is not None and (call.reservation is not None or slot.observation is not None):
            usage = stream.usage if stream is not None and stream.handle is not None else None
            self._settle_quota(call, usage, slot.take())
        self._settle(call, attempt, start, None, None, stream, interrupted=True)

    def _publish_health(self, reason: str, seconds: float) -> None:
        """Tell the other balancers sharing our budgets (if any) that we took this
        provider out of rotation, or put it back (``seconds <= 0``)."""
        if self.quota is not None:
            self.quota.health(self.name, reason, seconds, trio.current_time())

    def _settle_quota(
        self, call: Call, usage: Usage | None, observation: Observation | None
    ) -> None:
        """Settle the attempt's reservation with its usage and what its response said."""
        assert self.quota is not None
        self.quota.settle(call, usage, observation, trio.current_time(), provider=self.name)

    def _settle(
        self,
        call: Call,
        attempt: int,
        start: float,
        response: LLMResponse | None,
        error: LLMError | None,
        stream: _StreamState | None,
        *,
        interrupted: bool,
    ) -> None:
        """Record the attempt's outcome and resolve it."""
        retry = call.assigned > 1
        if stream is not None and stream.handle is not None:
            self._end_stream(call, stream, error, interrupted, start, retry)
            return
        if interrupted:
            if call.hedge_lost:
                self._settle_hedge_lost(call, attempt, start)
                return
            error = self._cancel_error(call, start)
        self.held.discard(call)
        self.active -= 1
        now = trio.current_time()
        if response is not None:
            elapsed = now - start
            self._record_success(elapsed, response.usage, retry)
            peak = self.peak
            if elapsed >= peak.floor or now >= peak.due:  # else observing changes nothing
                peak.observe(elapsed, now)
            if not response.model:
                response = msgspec.structs.replace(response, model=self.provider_config.model or "")
            call.resolve(attempt, response)
        else:
            assert error is not None
            self._record_failure(error, now, retry, start)
            call.resolve(attempt, error)

    def _settle_hedge_lost(self, call: Call, attempt: int, start: float) -> None:
        """Cancelled because another attempt of its request answered first: not a failure."""
        self.held.discard(call)
        self.active -= 1
        self.stats.hedge_cancelled()
        self.circuit.record_neutral()
        self.peak.abandon(start, trio.current_time(), overtaken=call.overtaken)
        # Nobody waits for it; resolving keeps "every attempt resolves once" true.
        call.resolve(
            attempt,
            LLMError("another attempt answered first", provider=self.name, kind="cancelled"),
        )

    def _cancel_error(self, call: Call, start: float) -> LLMError:
        if call.abandoned:
            return LLMError("cancelled by the caller", provider=self.name, kind="cancelled")
        now = trio.current_time()
        if now >= call.deadline:
            # The request ran out of time, not this attempt: counted as the caller's
            # cancellation, as if its own cancel scope had fired (nothing against the provider).
            return LLMError(
                f"cut at the request's deadline after {now - start:.3g}s",
                provider=self.name,
                kind="cancelled",
            )
        return LLMError(
            f"attempt timed out after {trio.current_time() - start:.3g}s",
            provider=self.name,
            retryable=True,
            kind="timeout",
        )

    def _record_success(self, seconds: float, usage: Usage | None, retry: bool) -> None:
        self.stats.success(seconds, usage, retry=retry)
        circuit = self.circuit
        if circuit.failures or circuit.state != "closed":  # else already as a success leaves it
            if circuit.state != "closed":
                self._publish_health("circuit", 0.0)
            circuit.record_success()

    def _record_failure(
        self, error: LLMError, now: float, retry: bool, start: float | None = None
    ) -> None:
        """``start`` is given for a failure before any answer (the latency is a lower bound)."""
        if not error.provider:
            error.provider = self.name
        self.redact.error(error)
        cancelled = error.kind == "cancelled"
        self.stats.failure(str(error), retry=retry, cancelled=cancelled)
        if error.status == 429:
            self.stats.rate_limited += 1
        if cancelled:
            self.circuit.record_neutral()
            return
        if not error.retryable and not error.disables_provider:
            # The request's own fault (400, 422): says nothing about the provider's health.
            self.circuit.record_neutral()
            return
        if error.disables_provider:
            if self.refusal is None:  # once per refusal, not once per request it fails
                log.warning("provider %s left rotation: %s", self.name, error)
            self._refusal = error
            self.circuit.trip(
                now, f"misconfigured: {error}", cooldown=self.balancer_config.cooldown
            )
            self._publish_health("disabled", self.balancer_config.cooldown)
        else:
            self._refusal = None  # its latest failure is a transient one
            was_open = self.circuit.state == "open"
            self.circuit.record_failure(now, str(error))
            if self.circuit.state == "open" and not was_open and error.status != 429:
                # A 429 is quota, shared through the budgets (Retry-After) already.
                self._publish_health("circuit", self.circuit.open_until - now)
            if error.retry_after is not None:
                wait = min(error.retry_after, self.balancer_config.max_retry_delay)
                self.retry_after_until = max(self.retry_after_until, now + wait)
                self.not_before = max(self.not_before, self.retry_after_until)
        if start is not None:
            self.peak.observe_at_least(now - start, now)
        self.health_failures += 1
        if self._on_health_failure is not None:
            self._on_health_failure(self, now)

    async def _stream(
        self, call: Call, attempt: int, scope: trio.CancelScope, start: float, state: _StreamState
    ) -> None:
        """Open the stream, commit on the first chunk, then hand chunks to the caller.

        Chunks travel in batches: all that one read of the body completed, in one
        hand-over and one wake-up of the caller, with the idle deadline moved once
        per read. Before the commit an `LLMError` propagates (the attempt failed
        and may be retried elsewhere); after it, errors reach the caller through
        the handle.
        """
        idle = self.balancer_config.stream_idle_timeout
        provider = self.provider
        # `HTTPProvider.stream_batches` hands over what each read completed, with the
        # chunks already stamped with this provider's name; any other provider
        # streams one chunk at a time.
        by_read = getattr(provider, "stream_batches", None)
        opened = (
            by_read(call.request, self.name)
            if by_read is not None
            else _one_per_batch(provider, call.request)
        )
        async with opened as batches:
            first = await anext(batches, None)
            if not first:
                raise LLMError(
                    "stream ended before its first chunk",
                    provider=self.name,
                    retryable=True,
                    kind="protocol",
                )
            now = trio.current_time()
            ttft = now - start
            self.stats.first_token(ttft)
            peak = self.peak  # streams: the cost is the time to the first chunk
            if ttft >= peak.floor or now >= peak.due:  # else observing changes nothing
                peak.observe(ttft, now)
            self.circuit.record_success()
            handle = state.handle = StreamHandle(first, self.name, call)
            _take_usage(state, first)
            call.resolve(attempt, handle)
            scope.deadline = now + idle
            try:
                async for batch in batches:
                    scope.deadline = trio.current_time() + idle
                    if batch:
                        _take_usage(state, batch)
                        await handle.put(batch)
                await handle.complete()
            except trio.ClosedResourceError:
                call.abandon()  # the caller left early: close the upstream now

    def _end_stream(
        self,
        call: Call,
        state: _StreamState,
        failure: LLMError | None,
        interrupted: bool,
        start: float,
        retry: bool,
    ) -> None:
        assert state.handle is not None
        now = trio.current_time()
        self.held.discard(call)
        self.active -= 1
        if call.hedge_lost and call.abandoned and (failure is None or failure.kind == "cancelled"):
            # It started before another attempt of its request won the race: never delivered.
            self.stats.hedge_cancelled()
            self.circuit.record_neutral()
            state.handle.fail(
                LLMError("another attempt answered first", provider=self.name, kind="cancelled")
            )
            return
        if failure is None and call.abandoned:
            # The caller left early; the upstream may or may not have noticed in time.
            failure = LLMError("cancelled by the caller", provider=self.name, kind="cancelled")
        elif failure is None and interrupted:
            failure = LLMError(
                f"stream stalled: no chunk for {self.balancer_config.stream_idle_timeout:g}s",
                provider=self.name,
                retryable=True,
                kind="timeout",
            )
        if failure is None:
            self.stats.streams_completed += 1
            self._record_success(now - start, state.usage, retry)
            state.handle.finished = True
            return
        if failure.kind != "cancelled":
            self.stats.streams_failed += 1
        self._record_failure(failure, now, retry)
        state.handle.fail(failure)

    # -- health ---------------------------------------------------------------------

    async def probe(self) -> ProviderHealth:
        """Probe now; a failed probe opens the circuit, a good one closes it."""
        timeout = self.balancer_config.health_check_timeout
        start = trio.current_time()
        ok = False
        error: LLMError | None = None
        reason = "the probe said no"
        with trio.move_on_after(timeout) as scope:
            try:
                ok = bool(await self.provider.check_health())
            except LLMError as exc:
                error = exc
            except Exception as exc:  # a probe that raises is a failed probe, not a crash
                log.warning("health probe of %s raised %s", self.name, type(exc).__name__)
                reason = f"the probe raised {type(exc).__name__}"
        now = trio.current_time()
        if ok:
            if self.circuit.state != "closed":
                self.circuit.reset()
                self._publish_health("circuit", 0.0)
            self.retry_after_until = float("-inf")
            self.not_before = self.ejection.until
            return ProviderHealth(name=self.name, status="up", latency=now - start)
        kind: str | None = None
        status: int | None = None
        if scope.cancelled_caught:
            reason, kind = f"no answer within {timeout:g}s (health_check_timeout)", "timeout"
        elif error is not None:
            self.redact.error(error)
            kind, status = error.kind, error.status
            reason = error.message if status is None else f"HTTP {status}: {error.message}"
        if self.circuit.state != "open":
            self.circuit.trip(now, f"health probe failed: {reason}")
            self._publish_health("circuit", self.circuit.open_until - now)
        return ProviderHealth(
            name=self.name,
            status="down",
            reason=reason,
            http_status=status,
            kind=kind,
            latency=now - start,
        )

    async def _health_loop(self) -> None:
        interval = self.balancer_config.health_check_interval
        assert interval is not None
        while True:
            await trio.sleep(interval * (0.9 + 0.2 * self._rng.random()))
            await self.probe()

    def reroute_held(self, reason: str, *, cancelled: bool = False) -> None:
        """Resolve every attempt this actor held (it crashed, is being removed or shut down)."""
        reason = self.redact(reason)
        for call in list(self.held):
            if cancelled:
                error = LLMError(reason, provider=self.name, kind="cancelled")
            else:
                error = LLMError(reason, provider=self.name, retryable=True, kind="crash")
            self.stats.failure(reason, retry=call.assigned > 1, cancelled=cancelled)
            if call.reservation is not None:
                self._settle_quota(call, None, None)
            call.resolve(call.attempt, error)
        self.active -= len(self.held)
        self.held.clear()
        self.circuit.record_neutral()

    def reroute_queued(self, reason: str) -> None:
        """Hand back every call still waiting in the mailbox (never attempted here)."""
        while True:
            try:
                call = self.mailbox_recv.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            self.queued -= 1
            if call.reservation is not None:
                self._settle_quota(call, None, None)
            call.resolve(call.attempt, Reroute(reason))
        self._on_capacity()
        self._maybe_idle()


class _StreamState:
    """What a streamed attempt left behind for `ProviderActor._end_stream`."""

    __slots__ = ("handle", "usage")

    def __init__(self) -> None:
        self.handle: StreamHandle | None = None
        self.usage: Usage | None = None


def _take_usage(state: _StreamState, batch: list[StreamChunk]) -> None:
    """The stream's usage is the last one any chunk reported (the built-in
    protocols put it on the final chunk, the last of its batch)."""
    for chunk in reversed(batch):
        if chunk.usage is not None:
            state.usage = chunk.usage
            return


@asynccontextmanager
async def _one_per_batch(
    provider: BaseProvider, request: LLMRequest
) -> AsyncIterator[AsyncIterator[list[StreamChunk]]]:
    """A provider's own `stream`, one chunk per batch (it says nothing about reads)."""
    async with provider.stream(request) as chunks:
        batches = _singles(chunks)
        try:
            yield batches
        finally:
            await batches.aclose()


async def _singles(chunks: AsyncIterator[StreamChunk]) -> AsyncGenerator[list[StreamChunk], None]:
    async for chunk in chunks:
        yield [chunk]


class _Running:
    """The attempt a worker is running, for settling it if its scope fires.

    ``slot`` (quotas on) receives what the running attempt's response said.
    """

    __slots__ = ("attempt", "call", "quota", "serial", "slot", "started", "stream")

    def __init__(self) -> None:
        self.slot: ObservationSlot | None = None
        self.quota: QuotaGate | None = None
        self.serial = 0  # changes whenever an attempt starts or ends (`AttemptTimer`)
        self.clear()

    def expire(self) -> None:
        """Timed out: cancel the worker's scope, which the running call holds."""
        call = self.call
        if call is not None and call.scope is not None:
            call.scope.cancel()

    def on_send(self) -> None:
        """The transport is about to write the running attempt's request (quotas on).

        Only a reserved call has anything to mark: the check comes first, as this
        runs for every request a worker sends.
        """
        call = self.call
        if call is not None and call.reservation is not None and self.quota is not None:
            self.quota.sent(call, trio.current_time())

    def start(self, call: Call, attempt: int, started: float, stream: _StreamState | None) -> None:
        self.serial += 1
        self.call: Call | None = call
        self.attempt = attempt
        self.started = started
        self.stream: _StreamState | None = stream

    def clear(self) -> None:
        self.serial += 1
        self.call = None
        self.attempt = 0
        self.started = 0.0
        self.stream = None
