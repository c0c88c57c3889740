"""The supervisor: a nursery of provider actors, restarts under an intensity limit, add/remove."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio
import trio.lowlevel

from .._errors import ConfigError
from .provider import ProviderActor

if TYPE_CHECKING:
    import random
    from collections.abc import Callable

    from .._config import BalancerConfig, ProviderConfig
    from .._quota._gate import QuotaGate
    from ..providers._base import BaseProvider
    from .dispatcher import Dispatcher

__all__ = ["Supervisor"]

log = logging.getLogger("llmlb_actors")


class Supervisor:
    """Starts provider actors with the trio start handshake and keeps them running.

    A provider actor that crashes (an exception other than `LLMError` inside
    it) has the attempts it held re-routed and is restarted with a fresh
    provider object, keeping its mailbox, stats and circuit. More than
    ``max_restarts`` crashes within ``restart_window`` seconds take it out of
    rotation for good; its stats say why. Strictly private.
    """

    def __init__(
        self,
        balancer_config: BalancerConfig,
        dispatcher: Dispatcher,
        factory: Callable[[ProviderConfig], BaseProvider],
        rng: random.Random,
        quota: QuotaGate | None = None,
    ) -> None:
        self.balancer_config = balancer_config
        self.quota = quota
        self.dispatcher = dispatcher
        self._factory = factory
        self._rng = rng
        self.actors: dict[str, ProviderActor] = {}
        self._next_index = 0
        self._nursery: trio.Nursery | None = None
        self._closing = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def cancel(self) -> None:
        """Stop every actor (shutdown)."""
        self._closing = True
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def _publish(self) -> None:
        rotation = [a for a in self.actors.values() if a.in_rotation]
        rotation.sort(key=lambda a: a.index)
        self.dispatcher.set_rotation(rotation)

    async def add(self, provider_config: ProviderConfig) -> ProviderActor:
        """Start an actor for ``provider_config``; returns once it is ready and in rotation."""
        name = provider_config.name
        if name in self.actors:
            raise ConfigError(f"a provider named {name!r} already exists", field="name")
        assert self._nursery is not None
        actor = ProviderActor(
            provider_config,
            self._next_index,
            self.balancer_config,
            self._factory,
            self._rng,
            self.dispatcher.notify_capacity,
            self.quota,
        )
        if self.quota is not None:
            self.quota.add(provider_config, trio.current_time())
        self._next_index += 1
        self.actors[name] = actor
        try:
            await self._nursery.start(self._supervise, actor)
        except BaseException:
            self.actors.pop(name, None)
            if self.quota is not None:
                self.quota.remove(name)
            raise
        self._publish()
        return actor

    async def _supervise(
        self, actor: ProviderActor, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        started = False

        def ready() -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started()

        try:
            await self._run_restarting(actor, ready)
        finally:
            actor.stopped.set()
            # A removal draining this actor stops waiting: nothing here will finish now.
            actor.release_drain()

    async def _run_restarting(self, actor: ProviderActor, ready: Callable[[], None]) -> None:
        """Run ``actor`` until stopped, restarting it after crashes; ``ready`` is idempotent."""
        while True:
            try:
                await actor.run(ready)
            except Exception as exc:
                while True:
                    if not self._on_crash(actor, exc):
                        ready()  # a crash before the first start must not leave add() waiting
                        return
                    try:
                        old = actor.renew_provider()
                    except Exception as failed:
                        # The provider cannot even be rebuilt: that is one more crash, and
                        # must not take the supervisor (and every other provider) down.
                        exc = failed
                        continue
                    break
                with trio.CancelScope(shield=True):
                    await _close_quietly(old)
                continue
            except BaseException as exc:
                # Shutdown (cancellation): what the actor held ends here; count it as
                # cancelled so that its stats still add up afterwards.
                reason = f"provider {actor.name!r} stopped: the balancer was shut down"
                actor.reroute_held(reason, cancelled=True)
                actor.reroute_queued(reason)
                if isinstance(exc, BaseExceptionGroup):
                    # A crash that raced the cancellation must not escape the balancer.
                    cancelled, rest = exc.split(trio.Cancelled)
                    if cancelled is not None and rest is not None and _only_crashes(rest):
                        raise cancelled from None
                raise
            # Normal return: the actor was stopped (removed or shutdown).
            actor.reroute_held(f"provider {actor.name!r} stopped while holding the attempt")
            return

    def _on_crash(self, actor: ProviderActor, exc: Exception) -> bool:
        """Record a crash; True if the actor may restart."""
        now = trio.current_time()
        exc = _cause(exc)
        reason = f"provider actor crashed: {type(exc).__name__}: {exc}"
        actor.reroute_held(reason)
        if self._closing or actor.removed:
            return False
        window = self.balancer_config.restart_window
        times = actor.restart_times
        while times and times[0] <= now - window:
            times.popleft()
        if len(times) >= self.balancer_config.max_restarts:
            actor.dead_reason = actor.redact(
                f"restart limit reached ({self.balancer_config.max_restarts} restarts in "
                f"{window:g}s); last crash: {type(exc).__name__}: {exc}"
            )
            log.error("provider %s left rotation: %s", actor.name, actor.dead_reason)
            self._publish()
            actor.reroute_queued(actor.dead_reason)
            return False
        times.append(now)
        actor.restarts += 1
        log.warning("provider %s crashed (%s); restarting", actor.name, type(exc).__name__)
        return True

    async def remove(self, name: str) -> None:
        """Take a provider out of rotation now, let it drain, then stop it and drop its stats."""
        actor = self.actors.get(name)
        if actor is None:
            raise KeyError(name)
        if actor.removed:
            return
        actor.removed = True
        self._publish()
        actor.reroute_queued(f"provider {name!r} was removed before running the attempt")
        with trio.move_on_after(self.balancer_config.drain_timeout):
            await actor.wait_drained()
        actor.stop()
        # The supervising task observes the stop and re-routes whatever was left.
        await actor.stopped.wait()
        self.actors.pop(name, None)
        self.dispatcher.strategy.forget(name)
        if self.quota is not None:
            self.quota.remove(name)
        with trio.CancelScope(shield=True):
            await _close_quietly(actor.provider)

    async def aclose_providers(self) -> None:
        for actor in list(self.actors.values()):
            await _close_quietly(actor.provider)


def _only_crashes(group: BaseExceptionGroup[BaseException]) -> bool:
    """True when every exception in ``group`` is an ordinary one (no KeyboardInterrupt...)."""
    return group.split(Exception)[1] is None


def _cause(exc: Exception) -> Exception:
    """The exception that crashed an actor, out of the nursery's group around it."""
    while isinstance(exc, ExceptionGroup):
        inner = [e for e in exc.exceptions if not isinstance(e, trio.Cancelled)]
        if not inner:
            break
        exc = inner[0]
    return exc


async def _close_quietly(provider: BaseProvider) -> None:
    try:
        await provider.aclose()
    except Exception as exc:
        log.warning("closing provider %s raised %s", provider.name, type(exc).__name__)
