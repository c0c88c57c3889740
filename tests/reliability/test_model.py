"""A stateful model of the balancer under faults, over loopback HTTP, on virtual time.

Hypothesis generates a list of operations (submit whole or streamed requests,
add, remove and crash providers, make simulated providers fail in each way or
recover, cancel callers, advance time, settle, health checks, shut down) and
replays it inside ONE ``trio.run`` on ``MockClock(autojump_threshold=0)``.
The RuleBasedStateMachine route needs hypothesis-trio, whose last release
was in 2021, so the list-replay form is used instead: the same shrinking,
and every step still runs in the one event loop the balancer lives in.

After every step, and at the end, the model checks that: every request is
resolved at most (finally: exactly) once with a response or a typed error;
no caller waits past its deadline; stats add up per provider and in total
(`get_totals` against what the callers saw); no attempt is ever handed to a
removed or dead provider and their simulated upstream receives nothing new;
restart counts and rotation follow the restart-intensity limit; and after
shutdown every caller resolves promptly and no library task is left.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio
import trio.testing
from hypothesis import event, example, given
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

import llmlb_actors as llmlb
from llmlb_actors._actors.provider import ProviderActor
from llmlb_actors._errors import LLMError, LoadBalancerError
from llmlb_actors.sim import Behaviour, SimProvider, Simulator, open_simulator
from llmlb_actors.testing import ZeroJitter, crash_provider
from tests.reliability._support import (
    balancer_error_problems,
    classification_problems,
    library_tasks,
)

if TYPE_CHECKING:
    from llmlb_actors._actors._call import Call

KEY = "sk-model-SECRET-31415926"
SIM_NAMES = tuple(f"p{i}" for i in range(6))
INITIAL = 3  # p0..p2 start in the balancer; "add" brings in p3..p5 (names are never reused)
REQ = llmlb.LLMRequest(prompt="tell me about actors and supervisors")
FAULTS = ("500", "503", "529", "429", "hang", "reset", "malformed", "cut", "stall", "401")
EPS = 1e-6

BASE = Behaviour(latency=0.2, latency_jitter=0.2, token_delay=0.1, chunks=4)
SETTINGS: dict[str, Any] = {
    "global_timeout": 4.0,
    "max_retries": 2,
    "retry_delay": 0.25,
    "max_retry_delay": 2.0,
    "failure_threshold": 2,
    "cooldown": 8.0,
    "health_check_timeout": 2.0,
    "max_restarts": 2,
    "restart_window": 10_000.0,
    "drain_timeout": 3.0,
    "stream_idle_timeout": 2.0,
    "queue_size": 4,  # small, so backpressure is part of every run
}
PROVIDER: dict[str, Any] = {"max_concurrency": 2, "mailbox_size": 2}
# Longest a request without a deadline may take: every attempt and re-route timing
# out behind a full queue, with backoff. Virtual seconds, so generosity costs nothing.
UNTIMED_BOUND = 3000.0


# -- operations ---------------------------------------------------------------------

Op = tuple[Any, ...]


def _submit() -> st.SearchStrategy[Op]:
    # A fresh strategy object per branch: one_of drops repeated identical branches.
    return st.tuples(
        st.just("submit"),
        st.booleans(),
        st.sampled_from([None, 1.0, 3.0, 10.0, 40.0]),
        st.integers(1, 4),
    )


_index = st.integers(0, 11)
OPS = st.one_of(
    *[_submit() for _ in range(6)],
    st.tuples(st.just("add")),
    st.tuples(st.just("remove"), _index),
    st.tuples(st.just("crash"), _index),
    st.tuples(st.just("crash"), _index),
    st.tuples(st.just("fault"), _index, st.sampled_from(FAULTS), st.sampled_from([0.5, 1.0])),
    st.tuples(st.just("fault"), _index, st.sampled_from(FAULTS), st.sampled_from([0.5, 1.0])),
    st.tuples(st.just("recover"), _index),
    st.tuples(st.just("cancel"), st.integers(0, 1000)),
    st.tuples(st.just("advance"), st.sampled_from([0.05, 0.3, 1.0, 2.5, 6.0, 20.0])),
    st.tuples(st.just("advance"), st.sampled_from([0.05, 0.3, 1.0, 2.5, 6.0, 20.0])),
    st.tuples(st.just("settle")),
    st.tuples(st.just("health")),
)
SCENARIO = st.fixed_dictionaries(
    {
        "ops": st.lists(OPS, min_size=10, max_size=40),
        "shutdown_at": st.one_of(st.none(), st.integers(0, 40)),
        "strategy": st.sampled_from(["round-robin", "failover", "least-busy", "latency"]),
        "health_interval": st.sampled_from([None, 12.0]),
        "retry_after": st.sampled_from([0.5, 5.0]),
    }
)


# -- the model ----------------------------------------------------------------------


@dataclass
class Caller:
    index: int
    stream: bool
    timeout: float | None
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    started: bool = False
    counted: bool = False  # entered the request loop while open (counted in get_totals)
    returned: bool = False  # _run handed back a response or a committed stream
    submitted: float = 0.0
    committed_at: float | None = None
    last_chunk_at: float | None = None
    outcomes: list[str] = field(default_factory=list)
    provider: str | None = None
    error: BaseException | None = None

    @property
    def done(self) -> bool:
        return bool(self.outcomes)

    @property
    def in_run(self) -> bool:
        """Counted by the balancer as in flight: inside `_run`, not yet out of it."""
        return self.counted and not self.returned and not self.done


@dataclass
class Upstream:
    """What the model knows about one simulated provider's place in the balancer."""

    name: str
    state: str = "unused"  # unused | active | removing | removed | dead
    crashes: int = 0
    baseline: int | None = None  # sim requests once it could receive no more
    responses: int = 0  # whole answers and complete streams callers got from it


class Model:
    def __init__(self, sim: Simulator, nursery: trio.Nursery, scenario: dict[str, Any]) -> None:
        self.sim = sim
        self.nursery = nursery
        self.scenario = scenario
        self.lb: llmlb.Balancer | None = None
        self.closed = False
        self.callers: list[Caller] = []
        self.upstreams = {name: Upstream(name) for name in SIM_NAMES}
        self.removers = 0
        self.problems: list[str] = []
        self.idle = float(SETTINGS["stream_idle_timeout"])

    def fail(self, message: str) -> None:
        self.problems.append(f"t={trio.current_time():.3f}: {message}")

    def provider_config(self, name: str) -> llmlb.ProviderConfig:
        return self.sim.provider_config(name, **PROVIDER)

    @property
    def balancer(self) -> llmlb.Balancer:
        assert self.lb is not None
        return self.lb

    # -- callers --------------------------------------------------------------------

    async def run_caller(self, caller: Caller) -> None:
        lb = self.balancer
        with caller.scope:
            caller.started = True
            caller.submitted = trio.current_time()
            caller.counted = not lb._requests.closed
            try:
                if caller.stream:
                    await self._stream(lb, caller)
                else:
                    resp = await lb.request(REQ, timeout=caller.timeout)
                    caller.returned = True
                    self._resolve(caller, "response", provider=resp.provider)
                    if resp.attempts < 1 or not resp.content:
                        self.fail(f"caller {caller.index}: odd response {resp!r}")
            except LoadBalancerError as exc:
                self._resolve(caller, "failed", error=exc)
                if caller.returned:
                    self.fail(f"caller {caller.index}: LoadBalancerError after commit")
                self.problems += balancer_error_problems(exc, secret=KEY)
            except LLMError as exc:
                self._resolve(caller, "broken", error=exc)
                if not (caller.stream and caller.returned and exc.partial):
                    self.fail(f"caller {caller.index}: bare LLMError {exc!r}")
                self.problems += classification_problems(exc, secret=KEY)
            except trio.Cancelled:
                self._resolve(caller, "cancelled")
                raise
            except BaseException as exc:  # anything else is a bug worth reporting
                self._resolve(caller, "untyped", error=exc)
                self.fail(f"caller {caller.index}: untyped {type(exc).__name__}: {exc!r}")

    async def _stream(self, lb: llmlb.Balancer, caller: Caller) -> None:
        last: llmlb.StreamChunk | None = None
        async with lb.stream(REQ, timeout=caller.timeout) as chunks:
            caller.returned = True
            caller.committed_at = trio.current_time()
            async for chunk in chunks:
                caller.last_chunk_at = trio.current_time()
                last = chunk
        if last is None or last.finish_reason is None:
            self.fail(f"caller {caller.index}: stream ended without a finish reason")
        self._resolve(caller, "streamed", provider=last.provider if last else None)

    def _resolve(
        self,
        caller: Caller,
        outcome: str,
        *,
        provider: str | None = None,
        error: BaseException | None = None,
    ) -> None:
        caller.outcomes.append(outcome)
        caller.provider = provider
        caller.error = error
        if len(caller.outcomes) > 1:
            self.fail(f"caller {caller.index} resolved twice: {caller.outcomes}")
        if provider is not None:
            if provider not in self.upstreams:
                self.fail(f"caller {caller.index}: answer from unknown provider {provider!r}")
            else:
                self.upstreams[provider].responses += 1

    # -- operations -----------------------------------------------------------------

    def names(self) -> list[str]:
        """Providers the balancer currently has, in a stable order."""
        return sorted(self.balancer.get_stats())

    async def apply(self, op: Op) -> None:
        kind = op[0]
        lb = self.balancer
        if kind == "submit":
            _, stream, timeout, count = op
            for _ in range(count):
                caller = Caller(len(self.callers), stream, timeout)
                self.callers.append(caller)
                self.nursery.start_soon(self.run_caller, caller)
        elif kind == "add":
            await self._add()
        elif kind == "remove":
            names = [n for n in self.names() if self.upstreams[n].state in ("active", "dead")]
            if names:
                name = names[op[1] % len(names)]
                before = self.upstreams[name].state
                self.upstreams[name].state = "removing"
                self.removers += 1
                self.nursery.start_soon(self._remove, name, before)
        elif kind == "crash":
            await self._crash(op[1])
        elif kind == "fault":
            _, i, outcome, probability = op
            # Mostly a provider the balancer has; sometimes one it may add later.
            names = self.names() if i < 8 and self.names() else list(SIM_NAMES)
            name = names[i % len(names)]
            behaviour = Behaviour(
                latency=BASE.latency,
                latency_jitter=BASE.latency_jitter,
                token_delay=BASE.token_delay,
                chunks=BASE.chunks,
                faults={outcome: probability},
                retry_after=self.scenario["retry_after"],
                seed=i,
            )
            self.sim.set_behaviour(name, behaviour)
        elif kind == "recover":
            names = self.names() or list(SIM_NAMES)
            name = names[op[1] % len(names)]
            self.sim.set_behaviour(name, BASE)
            self.sim.clear_script(name)
        elif kind == "cancel":
            pending = [c for c in self.callers if not c.done]
            if pending:
                pending[op[1] % len(pending)].scope.cancel()
        elif kind == "advance":
            await trio.sleep(op[1])
        elif kind == "settle":
            await self.settle()
        elif kind == "health":
            await self._health(lb)
        else:  # pragma: no cover - the strategy only builds the kinds above
            raise AssertionError(kind)

    async def _add(self) -> None:
        unused = [u for u in self.upstreams.values() if u.state == "unused"]
        if not unused:
            return
        upstream = unused[0]
        if self.closed:
            try:
                await self.balancer.add_provider(self.provider_config(upstream.name))
            except LoadBalancerError:
                return
            self.fail("add_provider after shutdown did not raise LoadBalancerError")
            return
        await self.balancer.add_provider(self.provider_config(upstream.name))
        upstream.state = "active"

    async def _remove(self, name: str, before: str) -> None:
        start = trio.current_time()
        try:
            await self.balancer.remove_provider(name)
        except LoadBalancerError:
            if not self.closed:
                self.fail(f"remove_provider({name!r}) failed while open")
            self.upstreams[name].state = before
            return
        except BaseException as exc:
            self.fail(f"remove_provider({name!r}) raised {type(exc).__name__}: {exc!r}")
            raise
        finally:
            self.removers -= 1
        took = trio.current_time() - start
        if took > SETTINGS["drain_timeout"] + EPS:
            self.fail(f"removing {name} took {took:.3f}s, over the drain timeout")
        self.upstreams[name].state = "removed"
        if name in self.balancer.get_stats():
            self.fail(f"{name} still has stats after its removal")

    async def _crash(self, i: int) -> None:
        names = self.names()
        if not names:
            return
        name = names[i % len(names)]
        upstream = self.upstreams[name]
        try:
            crash_provider(self.balancer, name, RuntimeError("injected crash"))
        except RuntimeError:
            return  # not running: dead, stopped by a removal, or shut down
        await self.settle()
        if upstream.state != "active":
            return  # removing: a crash while draining only stops it sooner
        upstream.crashes += 1
        if upstream.crashes > SETTINGS["max_restarts"]:
            upstream.state = "dead"
            upstream.baseline = self.sim.stats(name).requests

    async def _health(self, lb: llmlb.Balancer) -> None:
        with trio.move_on_after(SETTINGS["health_check_timeout"] + 1.0) as scope:
            result = await lb.health_check()
        if scope.cancelled_caught:
            self.fail("health_check() did not return within its timeout")
            return
        for name, healthy in result.items():
            if not isinstance(healthy, bool):
                self.fail(f"health_check()[{name!r}] is not a bool")
            if healthy and self.upstreams[name].state in ("dead", "removing", "removed"):
                self.fail(f"health_check() calls {name} healthy while out of rotation")

    async def settle(self) -> None:
        await trio.testing.wait_all_tasks_blocked()
        for upstream in self.upstreams.values():
            if upstream.state == "removed" and upstream.baseline is None:
                upstream.baseline = self.sim.stats(upstream.name).requests

    async def shutdown(self, stack: contextlib.AsyncExitStack) -> None:
        self.closed = True
        await stack.aclose()
        left = library_tasks()
        if left:
            self.fail(f"library tasks left after shutdown: {left}")

    # -- invariants -----------------------------------------------------------------

    def check(self) -> None:
        lb = self.balancer
        now = trio.current_time()
        stats = lb.get_stats()
        for name, s in stats.items():
            if s.total_requests != s.successful_requests + s.failed_requests:
                self.fail(f"{name}: total != successful + failed: {s}")
            if s.in_flight < 0 or s.queued < 0 or s.queued > s.in_flight:
                self.fail(f"{name}: in_flight {s.in_flight}, queued {s.queued}")
            if s.cancelled_requests > s.failed_requests:
                self.fail(f"{name}: more cancelled than failed")
            if s.streams_completed + s.streams_failed > s.streams_started:
                self.fail(f"{name}: streams ended > started")
            upstream = self.upstreams[name]
            if s.successful_requests < upstream.responses:
                self.fail(f"{name}: {upstream.responses} answers but {s.successful_requests} ok")
            if upstream.state == "dead":
                if s.in_rotation or "restart limit" not in (s.out_of_rotation_reason or ""):
                    self.fail(f"{name}: dead but {s.in_rotation=} {s.out_of_rotation_reason=}")
            elif upstream.state == "active" and not self.closed and not s.in_rotation:
                self.fail(f"{name}: should be in rotation: {s.out_of_rotation_reason}")
            if upstream.state in ("active", "dead") and s.restarts != min(
                upstream.crashes, SETTINGS["max_restarts"]
            ):
                self.fail(f"{name}: {s.restarts} restarts, expected {upstream.crashes} crashes")
            if secret_in(s):
                self.fail(f"{name}: the API key is in its stats")
        for upstream in self.upstreams.values():
            if upstream.baseline is not None:
                seen = self.sim.stats(upstream.name).requests
                if seen != upstream.baseline:
                    self.fail(
                        f"{upstream.name} ({upstream.state}) got {seen - upstream.baseline} "
                        "requests after it left rotation"
                    )
        totals = lb.get_totals()
        expected = (
            sum(c.counted for c in self.callers),
            sum(c.returned for c in self.callers),
            sum(c.counted and c.done and not c.returned for c in self.callers),
            sum(c.in_run for c in self.callers),
        )
        got = (totals.requests, totals.succeeded, totals.failed, totals.in_flight)
        if got != expected:
            self.fail(f"totals (requests, succeeded, failed, in_flight) {got} != {expected}")
        for caller in self.callers:
            if len(caller.outcomes) > 1:
                self.fail(f"caller {caller.index} resolved {caller.outcomes}")
            if caller.done or not caller.started:
                continue
            if caller.committed_at is not None:
                due = (caller.last_chunk_at or caller.committed_at) + self.idle
            elif caller.timeout is not None:
                due = caller.submitted + caller.timeout
            else:
                due = caller.submitted + UNTIMED_BOUND
            if now > due + EPS:
                self.fail(f"caller {caller.index} waits past its deadline ({now:.3f} > {due:.3f})")

    async def finish(self, stack: contextlib.AsyncExitStack) -> None:
        """Let everything end, check the quiet state, shut down, check again."""
        if not self.closed:
            await self.wait_callers(UNTIMED_BOUND)
            await self.settle()
            self.check()
            for name, s in self.balancer.get_stats().items():
                if s.in_flight:
                    self.fail(f"{name}: {s.in_flight} in flight with no caller waiting")
            if self.balancer.get_totals().in_flight:
                self.fail("the balancer counts requests in flight with no caller waiting")
            await self.shutdown(stack)
        # After shutdown the longest legitimate wait is one backoff sleep, which then
        # finds the balancer closed.
        await self.wait_callers(SETTINGS["max_retry_delay"] + EPS)
        await self.settle()
        self.check()
        for name, s in self.balancer.get_stats().items():
            if s.in_flight:
                self.fail(f"{name}: {s.in_flight} attempts in flight after shutdown")
        for caller in self.callers:
            if len(caller.outcomes) != 1:
                self.fail(f"caller {caller.index} resolved {len(caller.outcomes)} times")

    async def wait_callers(self, limit: float) -> None:
        deadline = trio.current_time() + limit
        while trio.current_time() < deadline:
            if all(c.done for c in self.callers) and self.removers == 0:
                return
            await trio.sleep(min(1.0, deadline - trio.current_time()))
        pending = [c.index for c in self.callers if not c.done]
        if pending or self.removers:
            self.fail(
                f"still pending after {limit:g}s: callers {pending}, {self.removers} removals"
            )


def secret_in(value: object) -> bool:
    return KEY in repr(value)


# -- the property ---------------------------------------------------------------------


class _Watch:
    """Records every hand-off of an attempt to a provider actor that is out of rotation."""

    def __init__(self) -> None:
        self.violations: list[str] = []

    def __enter__(self) -> _Watch:
        original = ProviderActor.enqueue
        self._original = original
        violations = self.violations

        def enqueue(actor: ProviderActor, call: Call, now: float) -> None:
            if not actor.in_rotation:
                violations.append(f"attempt handed to {actor.name} out of rotation")
            original(actor, call, now)

        setattr(ProviderActor, "enqueue", enqueue)  # noqa: B010 - a class attribute swap
        return self

    def __exit__(self, *exc: object) -> None:
        setattr(ProviderActor, "enqueue", self._original)  # noqa: B010


async def run_scenario(scenario: dict[str, Any]) -> list[str]:
    sims = [
        SimProvider(name=name, protocol="openai", api_key=KEY, behaviour=BASE) for name in SIM_NAMES
    ]
    async with open_simulator(sims) as sim, trio.open_nursery() as nursery:
        model = Model(sim, nursery, scenario)
        async with contextlib.AsyncExitStack() as stack:
            for name in SIM_NAMES[:INITIAL]:
                model.upstreams[name].state = "active"
            model.lb = await stack.enter_async_context(
                llmlb.open_balancer(
                    providers=[model.provider_config(n) for n in SIM_NAMES[:INITIAL]],
                    strategy=scenario["strategy"],
                    health_check_interval=scenario["health_interval"],
                    rng=ZeroJitter(),
                    **SETTINGS,
                )
            )
            ops: list[Op] = scenario["ops"]
            for step, op in enumerate(ops):
                if step == scenario["shutdown_at"] and not model.closed:
                    await model.shutdown(stack)
                    model.check()
                await model.apply(op)
                model.check()
            await model.finish(stack)
        nursery.cancel_scope.cancel()
    _report(model)
    return model.problems


def _report(model: Model) -> None:
    """Hypothesis statistics (``--hypothesis-show-statistics``): what the runs exercised."""
    if not currently_in_test_context():
        return  # replaying a scenario by hand
    outcomes = sorted({o for c in model.callers for o in c.outcomes})
    event(f"callers: {min(len(model.callers) // 10 * 10, 50)}+")
    for outcome in outcomes:
        event(f"outcome: {outcome}")
    for u in model.upstreams.values():
        event(f"upstream ended {u.state}")
    kinds = {
        e.kind
        for c in model.callers
        if isinstance(c.error, LoadBalancerError)
        for e in c.error.errors
    }
    for kind in kinds:
        event(f"attempt error kind: {kind}")


# Found by this test: callers blocked on the full dispatcher queue at shutdown hung forever.
FULL_QUEUE_AT_SHUTDOWN: dict[str, Any] = {
    "ops": [("submit", False, None, 4)] * 5 + [("settle",), ("settle",)],
    "shutdown_at": 6,
    "strategy": "round-robin",
    "health_interval": None,
    "retry_after": 0.5,
}


@given(SCENARIO)
@example(FULL_QUEUE_AT_SHUTDOWN)
def test_every_request_resolves_exactly_once_under_faults(scenario: dict[str, Any]) -> None:
    with _Watch() as watch:
        problems = trio.run(
            run_scenario, scenario, clock=trio.testing.MockClock(autojump_threshold=0)
        )
    problems += watch.violations
    assert not problems, "\n".join(problems[:20])
