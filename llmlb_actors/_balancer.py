"""The facade users hold: `open_balancer` and `Balancer`."""

from __future__ import annotations

import random
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from ._actors._call import NEEDS_IMAGES, NEEDS_TOOLS, StreamHandle
from ._actors._requests import RequestLoop
from ._actors.dispatcher import Dispatcher
from ._actors.supervisor import Supervisor
from ._batch import BatchMap
from ._config import BalancerConfig, ProviderConfig, resolve_api_key, with_api_keys
from ._errors import BalancerClosedError, ConfigError
from ._groups import unwrap_group
from ._models import LLMRequest, LLMResponse, StreamChunk
from ._quota._estimate import TiktokenEstimator, default_estimator, estimate_chars
from ._quota._gate import QuotaGate
from ._quota._store import InProcessQuotaStore
from ._stats import ProviderHealth
from ._transport._base import Transport, TransportLimits
from ._transport._settings import TransportSet
from .providers._adapter import adapter_class
from .providers._http import HTTPProvider
from .strategies import StrategyOptions, make_strategy

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable

    from ._stats import BalancerTotals, ProviderStats
    from .providers._base import BaseProvider

__all__ = ["Balancer", "open_balancer"]


def _quota_gate(config: BalancerConfig) -> QuotaGate | None:
    """The balancer's quota gate (``quota="on"``), over the configured or in-process store."""
    if config.quota == "off":
        return None
    estimator = config.token_estimator
    if estimator == "auto":
        estimator = default_estimator()
    elif estimator == "chars":
        estimator = estimate_chars
    elif estimator == "tiktoken":
        estimator = TiktokenEstimator()
    assert callable(estimator)
    store = config.quota_store
    if store is None and config.shared_state is not None:
        from ._shared._store import RedisQuotaStore

        store = RedisQuotaStore(config.shared_state)
    if store is None:
        store = InProcessQuotaStore()
    return QuotaGate(
        store, estimator, probe=config.quota_probe, max_retry_after=config.max_retry_delay
    )


async def _load_encodings(quota: QuotaGate, providers: list[ProviderConfig]) -> None:
    """Load tiktoken vocabularies in a thread, for models with token budgets; until then
    (and if it fails) the character estimate answers."""
    estimator = quota.estimator
    if not isinstance(estimator, TiktokenEstimator):
        return
    for provider in providers:
        if (provider.tpm or provider.tpd) and estimator.needs_load(provider.model):
            await trio.to_thread.run_sync(estimator.load, provider.model, abandon_on_cancel=True)


class Balancer:
    """A running balancer. Get one from `open_balancer`; all methods are trio-only."""

    def __init__(
        self,
        config: BalancerConfig,
        transports: TransportSet,
        rng: random.Random,
    ) -> None:
        self.config = config
        self._transports = transports
        self._rng = rng
        self._quota = quota = _quota_gate(config)
        # The strategy draws from its own source, seeded like the balancer's: a test's
        # zero-jitter ``rng`` (constant draws) would make every P2C pair the same two.
        options = StrategyOptions.from_config(config, random.Random(config.seed))
        if quota is not None:
            options = msgspec.structs.replace(
                options, headroom=lambda name: quota.headroom(name, trio.current_time())
            )
        strategy = make_strategy(config.strategy, options=options)
        self._dispatcher = Dispatcher(
            strategy, config.queue_size, quota, fail_fast=config.on_overload == "fail"
        )
        self._supervisor = Supervisor(config, self._dispatcher, self._make_provider, rng, quota)
        self._requests = RequestLoop(
            config, self._dispatcher, rng, check_needs=self._refuse_impossible
        )

    def _make_provider(self, provider_config: ProviderConfig) -> BaseProvider:
        protocol = provider_config.protocol
        if isinstance(protocol, str):
            # Created on first use: a balancer of custom providers needs none.
            transport = self._transports.get(provider_config.proxy)
            adapter = adapter_class(protocol)(provider_config)
            return HTTPProvider(provider_config, adapter, transport)
        return protocol(provider_config)

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
            ConfigError: the request has tools or images and no provider takes them.
        """
        outcome = await self._requests.run(request, stream=False, timeout=timeout)
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
        outcome = await self._requests.run(request, stream=True, timeout=timeout)
        assert isinstance(outcome, StreamHandle)
        try:
            yield outcome
        finally:
            outcome.close()

    def _refuse_impossible(self, needs: int) -> None:
        """Raise `ConfigError` (nothing is sent) if no provider can take a request's
        tools or images (``needs``); the dispatcher routes it only to those that can."""
        needs &= NEEDS_TOOLS | NEEDS_IMAGES
        actors = self._supervisor.actors.values()
        if any(not needs & ~actor.accepts for actor in actors):
            return
        what = [w for bit, w in ((NEEDS_TOOLS, "tools"), (NEEDS_IMAGES, "images")) if needs & bit]
        raise ConfigError(
            f"no provider can take a request with {' and '.join(what)}: "
            f"{', '.join(repr(a.name) for a in actors) or 'there are none'} "
            "(a BaseProvider subclass declares supports_tools / supports_images)",
            field="tools" if needs & NEEDS_TOOLS else "messages",
        )

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
            self.request,
            requests,
            concurrency=concurrency,
            ordered=ordered,
            buffer=buffer,
            timeout=timeout,
        )

    # -- observation ------------------------------------------------------------------

    def get_stats(self) -> dict[str, ProviderStats]:
        """``{name: ProviderStats}`` for every current provider (removed ones are gone)."""
        return {name: a.statistics() for name, a in self._supervisor.actors.items()}

    def get_totals(self) -> BalancerTotals:
        """Balancer-wide counters."""
        totals = self._requests.totals()
        quota = self._quota
        if quota is None:
            return totals
        return msgspec.structs.replace(
            totals,
            quota_waits=quota.waits,
            quota_wait_seconds=quota.wait_seconds,
            rate_limited=quota.refused,
        )

    def get_healthy_providers(self) -> list[ProviderConfig]:
        """Configs of the providers in rotation whose circuit is closed, in config order."""
        actors = sorted(self._supervisor.actors.values(), key=lambda a: a.index)
        return [a.provider_config for a in actors if a.is_healthy]

    async def health_check(self) -> dict[str, bool]:
        """Probe every provider now, concurrently; returns ``{name: healthy}``."""
        return {name: health.healthy for name, health in (await self.health_report()).items()}

    async def health_report(self) -> dict[str, ProviderHealth]:
        """Probe every provider now, concurrently; ``{name: ProviderHealth}`` says for each
        whether it is up and, if not, why (the HTTP status and the provider's message, a
        timeout, a refused connection, TLS) and how long the probe took. A provider out of
        rotation (crashed too often, being removed) is reported down without a probe.
        """
        reports: dict[str, ProviderHealth] = {}

        def out_of_rotation(name: str, actor: Any) -> ProviderHealth:
            why = actor.dead_reason or "removed"
            return ProviderHealth(name=name, status="down", reason=f"out of rotation: {why}")

        async def probe(name: str, actor: Any) -> None:
            health = await actor.probe()
            # It may have left rotation while the probe ran (a removal, a last crash).
            reports[name] = health if actor.in_rotation else out_of_rotation(name, actor)

        async with trio.open_nursery() as nursery:
            for name, actor in list(self._supervisor.actors.items()):
                if actor.in_rotation:
                    nursery.start_soon(probe, name, actor)
                else:
                    reports[name] = out_of_rotation(name, actor)
        return {name: reports[name] for name in self._supervisor.actors if name in reports}

    # -- membership ---------------------------------------------------------------------

    async def add_provider(self, config: ProviderConfig) -> None:
        """Start a provider at runtime; it joins rotation once its actor is ready.

        Raises:
            ConfigError: not a `ProviderConfig`, or its ``api_key_env`` is not set.
        """
        if not isinstance(config, ProviderConfig):
            raise ConfigError("add_provider needs a ProviderConfig", field="config")
        if self._requests.closed:
            raise BalancerClosedError("the balancer is closed")
        await self._supervisor.add(resolve_api_key(config))

    async def remove_provider(self, name: str) -> None:
        """Take a provider out of rotation, drain it, stop it and drop its stats.

        Queued requests are re-routed at once; running ones may finish within
        ``drain_timeout`` and are re-routed after it.

        Raises:
            KeyError: no provider has that name.
            LoadBalancerError: the balancer is closed.
        """
        if self._requests.closed:
            raise BalancerClosedError("the balancer is closed")
        await self._supervisor.remove(name)


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
    config = with_api_keys(config)  # api_key_env is read now, before anything starts
    rng = rng or random.Random(config.seed)
    limits = TransportLimits(
        max_response_bytes=config.max_response_bytes,
        verify_tls=config.verify_tls,
        max_connections=max(p.max_concurrency for p in config.providers),
    )
    # Reads (and checks) the environment's proxy settings now, before anything starts.
    transports = TransportSet(config, limits, transport_factory)
    balancer = Balancer(config, transports, rng)
    body: BaseException | None = None  # what the caller's block raised
    failure: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            if balancer._quota is not None:
                await nursery.start(balancer._quota.store.run)
            await nursery.start(balancer._dispatcher.run)
            await nursery.start(balancer._supervisor.run)
            if balancer._quota is not None:
                nursery.start_soon(_load_encodings, balancer._quota, list(config.providers))
            try:
                for provider in config.providers:
                    await balancer._supervisor.add(provider)
                try:
                    yield balancer
                except BaseException as exc:
                    body = exc
                    raise
            finally:
                balancer._requests.close()
                balancer._supervisor.cancel()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        failure = unwrap_group(group, body)
    finally:
        with trio.CancelScope(shield=True):
            await balancer._supervisor.aclose_providers()
            await transports.aclose()
    if failure is not None:
        raise failure  # outside the except clause: see unwrap_group
