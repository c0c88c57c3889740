"""The facade users hold: `open_balancer` and `Balancer`."""

from __future__ import annotations

import logging
import random
from contextlib import asynccontextmanager, nullcontext
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from ._actors._call import NEEDS_IMAGES, NEEDS_TOOLS, Call, NeedfulCall, Reroute, needs_of
from ._actors._stream import StreamHandle
from ._actors.dispatcher import Dispatcher
from ._actors.supervisor import Supervisor
from ._backoff import compute_backoff
from ._batch import BatchMap
from ._config import BalancerConfig, ProviderConfig
from ._errors import (
    BalancerClosedError,
    ConfigError,
    LLMError,
    LoadBalancerError,
    OverloadedError,
)
from ._groups import collapse_group
from ._models import LLMRequest, LLMResponse, StreamChunk
from ._stats import BalancerTotals, ProviderStats
from ._transport import make_transport
from ._transport._base import Transport, TransportLimits
from .providers._base import BaseProvider, HTTPProvider
from .providers._registry import adapter_class
from .strategies import make_strategy

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable

__all__ = ["Balancer", "open_balancer"]

log = logging.getLogger("llmlb_actors")

#: The deadline of a request without a timeout (one shared object, none per request).
_NO_DEADLINE = nullcontext()

# Re-routes (a provider crashed or left before running the attempt) do not use
# up retries, but are bounded so that a request always ends.
_MAX_REROUTES = 32


def _answered(call: Call, response: LLMResponse, start: float, *, attempts: int) -> LLMResponse:
    """The response as the caller gets it: which provider, how long, how many attempts."""
    answered = msgspec.structs.replace(
        response,
        provider=call.provider or "",
        latency=trio.current_time() - start,
        attempts=attempts,
    )
    metadata = call.request.metadata
    if metadata is not None:  # the caller's labels come back; they were never sent
        answered = msgspec.structs.replace(answered, metadata=metadata)
    return answered


class Balancer:
    """A running balancer. Get one from `open_balancer`; all methods are trio-only."""

    def __init__(
        self,
        config: BalancerConfig,
        transport: Callable[[], Transport],
        rng: random.Random,
    ) -> None:
        self.config = config
        self._transport_factory = transport
        self._transport: Transport | None = None
        self._rng = rng
        self._dispatcher = Dispatcher(
            make_strategy(config.strategy, config.custom_strategy), config.queue_size
        )
        self._supervisor = Supervisor(config, self._dispatcher, self._make_provider, rng)
        self._calls: set[Call] = set()
        self._closed = False
        self._requests = 0
        self._succeeded = 0
        self._failed = 0
        self._retries = 0
        self._rerouted = 0

    def _make_provider(self, config: ProviderConfig) -> BaseProvider:
        protocol = config.protocol
        if isinstance(protocol, str):
            if self._transport is None:
                # Created on first use: a balancer of custom providers needs none.
                self._transport = self._transport_factory()
            return HTTPProvider(config, adapter_class(protocol)(config), self._transport)
        return protocol(config)

    # -- requests -----------------------------------------------------------------

    async def request(self, request: LLMRequest, *, timeout: float | None = None) -> LLMResponse:
        """Answer ``request`` through the strategy, retrying and failing over as configured.

        Args:
            request: the prompt.
            timeout: overall deadline in seconds for this request, retries
                included (default: ``BalancerConfig.request_timeout``).

        Raises:
            LoadBalancerError: every allowed attempt failed, the deadline passed,
                or the request was rejected (400/422); ``.errors`` has each attempt.
        """
        outcome = await self._run(request, stream=False, timeout=timeout)
        assert isinstance(outcome, LLMResponse)
        return outcome

    @asynccontextmanager
    async def stream(
        self, request: LLMRequest, *, timeout: float | None = None
    ) -> AsyncIterator[AsyncIterator[StreamChunk]]:
        """Stream an answer: ``async with lb.stream(req) as chunks: async for c in chunks``.

        Retries and failover happen only until the first chunk reaches you;
        after that a failure raises `LLMError` with ``partial=True`` and the
        text received so far. Leaving the block early closes the upstream.
        ``timeout`` bounds the time to the first chunk.
        """
        outcome = await self._run(request, stream=True, timeout=timeout)
        assert isinstance(outcome, StreamHandle)
        try:
            yield outcome
        finally:
            outcome.close()

    def map(
        self,
        requests: Iterable[LLMRequest] | AsyncIterable[LLMRequest],
        *,
        concurrency: int = 64,
        ordered: bool = False,
        buffer: int | None = None,
        timeout: float | None = None,
    ) -> BatchMap:
        """Run many requests: ``async with lb.map(reqs) as results: async for r in results``.

        The input is consumed lazily; at most ``concurrency`` requests run at
        once and at most ``concurrency + buffer`` (default ``2 * concurrency``)
        results are held, so memory is bounded for any input size. Each item
        yields one `BatchResult`; a failure is a result, never an exception.
        ``ordered=True`` yields in input order. Leaving the block cancels
        what is unfinished. ``timeout`` applies to each request. See `BatchMap`.
        """
        return BatchMap(
            self, requests, concurrency=concurrency, ordered=ordered, buffer=buffer, timeout=timeout
        )

    async def _run(
        self, request: LLMRequest, *, stream: bool, timeout: float | None
    ) -> LLMResponse | StreamHandle:
        """Submit, wait, and retry only if the first attempt did not answer.

        Every object this coroutine holds lives as long as the request, and at
        thousands in flight what they cost is mostly the garbage collector
        walking them: the happy path stays in this one frame, with no
        allocation it can avoid.
        """
        if not isinstance(request, LLMRequest):
            raise TypeError(f"request must be an LLMRequest, got {type(request).__name__}")
        if self._closed:
            raise BalancerClosedError("the balancer is closed")
        if request.tools is None and request.messages is None:
            call = Call(request, stream=stream)  # a prompt: every provider can take it
        else:
            call = self._call_for(request, stream)
        start = trio.current_time()
        limit = timeout if timeout is not None else self.config.request_timeout
        self._requests += 1
        self._calls.add(call)
        outcome: LLMResponse | StreamHandle | None = None
        try:
            with _NO_DEADLINE if limit is None else trio.move_on_after(limit):
                call.next_attempt()
                if not self._dispatcher.dispatch_inline(call):
                    await self._enqueue(call)
                if call.outcome is None:
                    call.waiter = trio.lowlevel.current_task()
                    await trio.lowlevel.wait_task_rescheduled(call)
                else:
                    await trio.lowlevel.checkpoint()
                first = call.outcome
                if isinstance(first, LLMResponse):
                    outcome = _answered(call, first, start, attempts=1)
                elif isinstance(first, StreamHandle):
                    outcome = first
                else:
                    outcome = await self._retry(call, start)
            if outcome is None:
                call.abandon()
                errors = call.errors or []
                raise LoadBalancerError(
                    f"Request timed out after {limit:g}s ({len(errors)} attempts failed)", errors
                )
        except BaseException:
            call.abandon()
            self._failed += 1
            raise
        finally:
            self._calls.discard(call)
        self._succeeded += 1
        return outcome

    def _call_for(self, request: LLMRequest, stream: bool) -> Call:
        """A call that only providers able to take its tools or images may get.

        Raises:
            ConfigError: no provider of the balancer can take it (nothing is sent).
        """
        needs = needs_of(request)
        if not needs:
            return Call(request, stream=stream)
        actors = self._supervisor.actors.values()
        if not any(not needs & ~a.accepts for a in actors):
            what = " and ".join(
                w for bit, w in ((NEEDS_TOOLS, "tools"), (NEEDS_IMAGES, "images")) if needs & bit
            )
            raise ConfigError(
                f"no provider can take a request with {what}: "
                f"{', '.join(repr(a.name) for a in actors) or 'there are none'} "
                f"(a BaseProvider subclass declares supports_tools / supports_images)",
                field="messages" if needs == NEEDS_IMAGES else "tools",
            )
        return NeedfulCall(request, needs, stream=stream)

    async def _retry(self, call: Call, start: float) -> LLMResponse | StreamHandle:
        """Judge the current attempt's failure; retry, fail over or give up."""
        config = self.config
        errors = call.errors = []
        retries = 0
        reroutes = 0
        while True:
            outcome = call.outcome
            if isinstance(outcome, LLMResponse):
                return _answered(call, outcome, start, attempts=len(errors) + 1)
            if isinstance(outcome, StreamHandle):
                return outcome
            if isinstance(outcome, LoadBalancerError):
                outcome.errors = errors + outcome.errors
                raise outcome
            if isinstance(outcome, Reroute) or (
                isinstance(outcome, LLMError) and outcome.kind == "crash"
            ):
                if isinstance(outcome, LLMError):
                    errors.append(outcome)
                reroutes += 1
                self._rerouted += 1
                if reroutes > _MAX_REROUTES:
                    raise LoadBalancerError("All providers failed: too many re-routes", errors)
            else:
                assert isinstance(outcome, LLMError)
                errors.append(outcome)
                if outcome.kind == "cancelled":
                    # This caller is still waiting, so it did not cancel: the actor holding
                    # the attempt was stopped because the balancer is shutting down.
                    raise BalancerClosedError("the balancer was shut down", errors)
                if not outcome.retryable and not outcome.disables_provider:
                    raise LoadBalancerError(
                        f"Request rejected by {outcome.provider}: {outcome.message}", errors
                    )
                if retries >= config.max_retries:
                    raise LoadBalancerError(
                        f"All providers failed after {len(errors)} attempts", errors
                    )
                retries += 1
                self._retries += 1
                # After a refusal (401/403/404) fail over at once: the next provider
                # is not the one that refused us.
                if not outcome.disables_provider:
                    wait = max(
                        compute_backoff(
                            retries, config.retry_delay, config.max_retry_delay, self._rng
                        ),
                        self._dispatcher.earliest_retry_wait(call, trio.current_time()),
                    )
                    if wait > 0:
                        await trio.sleep(wait)
            call.next_attempt()
            await self._submit(call)
            await call.wait()

    async def _submit(self, call: Call) -> None:
        if self._closed:
            raise BalancerClosedError("the balancer is closed")
        if not self._dispatcher.dispatch_inline(call):
            await self._enqueue(call)

    async def _enqueue(self, call: Call) -> None:
        """Through the dispatcher's queue: it is busy, or every mailbox is full."""
        if self._closed:
            raise BalancerClosedError("the balancer is closed")
        self._dispatcher.queueing()
        try:
            if self.config.on_overload == "fail":
                try:
                    self._dispatcher.send.send_nowait(call)
                except trio.WouldBlock:
                    raise OverloadedError(
                        "Overloaded: the dispatcher queue is full (on_overload='fail')"
                    ) from None
            else:
                await self._dispatcher.send.send(call)
        except trio.ClosedResourceError:
            # Shutdown closed the queue while this caller waited for room in it.
            raise BalancerClosedError("the balancer is closed") from None

    # -- observation ------------------------------------------------------------------

    def get_stats(self) -> dict[str, ProviderStats]:
        """``{name: ProviderStats}`` for every current provider (removed ones are gone)."""
        return {name: a.stats_snapshot() for name, a in self._supervisor.actors.items()}

    def get_totals(self) -> BalancerTotals:
        """Balancer-wide counters."""
        return BalancerTotals(
            requests=self._requests,
            succeeded=self._succeeded,
            failed=self._failed,
            in_flight=len(self._calls),
            retries=self._retries,
            rerouted=self._rerouted,
        )

    def get_healthy_providers(self) -> list[ProviderConfig]:
        """Configs of the providers in rotation whose circuit is closed, in config order."""
        actors = sorted(self._supervisor.actors.values(), key=lambda a: a.index)
        return [a.config for a in actors if a.is_healthy]

    async def health_check(self) -> dict[str, bool]:
        """Probe every provider now, concurrently; returns ``{name: healthy}``."""
        results: dict[str, bool] = {}

        async def probe(name: str, actor: Any) -> None:
            results[name] = await actor.probe() and actor.in_rotation

        async with trio.open_nursery() as nursery:
            for name, actor in list(self._supervisor.actors.items()):
                nursery.start_soon(probe, name, actor)
        return {name: results[name] for name in self._supervisor.actors if name in results}

    # -- membership ---------------------------------------------------------------------

    async def add_provider(self, config: ProviderConfig) -> None:
        """Start a provider at runtime; it joins rotation once its actor is ready."""
        if not isinstance(config, ProviderConfig):
            raise ConfigError("add_provider needs a ProviderConfig", field="config")
        if self._closed:
            raise BalancerClosedError("the balancer is closed")
        await self._supervisor.add(config)

    async def remove_provider(self, name: str) -> None:
        """Take a provider out of rotation, drain it, stop it and drop its stats.

        Queued requests are re-routed at once; running ones may finish within
        ``drain_timeout`` and are re-routed after it.

        Raises:
            KeyError: no provider has that name.
            LoadBalancerError: the balancer is closed.
        """
        if self._closed:
            raise BalancerClosedError("the balancer is closed")
        await self._supervisor.remove(name)

    def _provider_actor(self, name: str) -> Any:
        """The live actor (tests and chaos tooling only)."""
        return self._supervisor.actors[name]

    # -- lifetime -----------------------------------------------------------------------

    def _shutdown_calls(self) -> None:
        self._closed = True
        for call in list(self._calls):
            call.resolve(call.attempt, BalancerClosedError("the balancer was shut down"))
            call.abandon()
        # Callers blocked on a full dispatcher queue are woken (ClosedResourceError).
        self._dispatcher.send.close()


@asynccontextmanager
async def open_balancer(
    config: BalancerConfig | None = None,
    *,
    rng: random.Random | None = None,
    transport_factory: Callable[[TransportLimits], Transport] | None = None,
    **fields: Any,
) -> AsyncIterator[Balancer]:
    """Run a balancer for the duration of an ``async with`` block.

    Pass a `BalancerConfig`, or its fields as keyword arguments
    (``open_balancer(strategy="failover", providers=[...])``). ``rng``
    replaces the random source for jitter and health-loop spacing (default:
    seeded from ``config.seed``).

    Raises:
        ConfigError: the configuration is invalid (before anything starts).
    """
    if config is None:
        try:
            config = BalancerConfig(**fields)
        except TypeError as exc:
            raise ConfigError(str(exc), field="") from None
    elif fields:
        raise ConfigError("pass either a BalancerConfig or keyword fields, not both")
    if not isinstance(config, BalancerConfig):
        raise ConfigError("config must be a BalancerConfig")
    rng = rng or random.Random(config.seed)
    owned = isinstance(config.transport, str)

    def build_transport() -> Transport:
        if not isinstance(config.transport, str):
            return config.transport
        limits = TransportLimits(
            max_response_bytes=config.max_response_bytes,
            verify_tls=config.verify_tls,
            max_connections=max(p.max_concurrency for p in config.providers),
        )
        if transport_factory is not None:
            return transport_factory(limits)
        return make_transport(config.transport, limits)

    balancer = Balancer(config, build_transport, rng)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(balancer._dispatcher.run)
            await nursery.start(balancer._supervisor.run)
            try:
                for provider in config.providers:
                    await balancer._supervisor.add(provider)
                yield balancer
            finally:
                balancer._shutdown_calls()
                balancer._supervisor.cancel()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise collapse_group(group) from None
    finally:
        with trio.CancelScope(shield=True):
            await balancer._supervisor.aclose_providers()
            if owned and balancer._transport is not None:
                await balancer._transport.aclose()
