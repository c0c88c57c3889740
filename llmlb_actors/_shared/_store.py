"""`RedisQuotaStore`: budgets shared by every balancer pointed at one Redis.

How it keeps the `QuotaStore` contract (see ``.._quota._store``):

- **One round trip per decision.** `reserve` is one ``EVALSHA`` of the reserve
  script (``_scripts.RESERVE``): it checks every budget of the provider, its
  holds (another balancer's Retry-After, open circuit or refusal) and learned
  limits, and takes the cost, atomically, on the server's clock. Settling
  (`reconcile_nowait`), what answers said (`observe_nowait`), moved send times
  (`mark_sent`) and health news (`report_health`) never block the caller: a
  background task sends them, concurrently over one connection.
- **Local reads.** `earliest` and `view` answer from the last server reply for
  the provider (its holds, what remains) and the claims this balancer has made
  since: the dispatcher sends no more attempts to a provider than its last
  reply said it had room for, and none while it is held.
- **Faults.** A round trip that fails or takes longer than the URL's
  ``timeout`` switches the store to *local mode*, with one warning: each
  budget is then this balancer's share, the limit divided by the balancer
  count its heartbeats last saw (1 when never seen), and the first window of
  the outage admits nothing (others' requests of the last second are
  unknown). The heartbeat keeps trying; when Redis answers again the store
  replays this balancer's request-window entries of the last second into it
  and switches back, with an INFO line. Nothing is sent twice: a decision is
  made once, by Redis or locally; a reservation whose reply was lost stays
  taken on the server until it expires.

Strictly private; the public name is re-exported by ``llmlb_actors.quota``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import secrets
import socket
import ssl
from collections import deque
from typing import TYPE_CHECKING, Any

import trio

from .._quota._budget import ProviderBudget, requests_per_second, sanitize
from .._quota._store import DEFAULT_WINDOW_GUARD, QuotaStore
from .._quota._types import Admission, Cost, Limits, QuotaView, Reservation
from . import _scripts
from ._url import parse_shared_state

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._quota._types import Hint, Observation

__all__ = ["UNCONFIRMED", "RedisQuotaStore"]

log = logging.getLogger("llmlb_actors.shared")

#: The id of a claim: a pick made from local reads that `reserve` has not confirmed yet.
UNCONFIRMED = 0

#: A balancer counts as live this many heartbeats after its last one.
_LIVE_BEATS = 3
#: Queued background operations beyond this are dropped (counted): Redis is too slow.
_QUEUE = 100_000

#: Script calls on the wire at once (more wait their turn before their timeout starts).
_IN_FLIGHT = 32

#: Round trips count towards the window up to this (s); how fast they stop counting.
_MAX_RTT_GUARD = 0.25
_RTT_UP, _RTT_DOWN = 0.3, 0.05

#: Seconds after which a provider whose room is all claimed is checked again anyway.
_RECHECK = 0.05

#: One script call: its name, keys and arguments.
_Op = tuple[str, list[str], list[Any]]


class _Hint:
    """What the last server reply said about one provider, on this balancer's clock."""

    __slots__ = (
        "headroom",
        "hold_reason",
        "hold_until",
        "learned_rpm",
        "learned_tpm",
        "pending",
        "remaining_requests",
        "remaining_tokens",
    )

    def __init__(self) -> None:
        self.hold_until = -math.inf
        self.hold_reason: str | None = None
        self.remaining_requests: int | None = None
        self.remaining_tokens: int | None = None
        self.learned_rpm: int | None = None
        self.learned_tpm: int | None = None
        self.headroom = 1.0
        self.pending = 0

    def hold(self, until: float, reason: str | None) -> None:
        if until > self.hold_until:
            self.hold_until = until
            self.hold_reason = reason


class _Taken:
    """One reservation this balancer holds: where it was decided, and what to settle."""

    __slots__ = ("buckets", "member", "shared", "slot", "stamp")

    def __init__(
        self, member: str, shared: bool, slot: int, stamp: float, buckets: str = ""
    ) -> None:
        self.member = member
        self.shared = shared
        self.slot = slot
        self.stamp = stamp
        self.buckets = buckets
        """The server-side buckets it took from (comma-separated): only those settle."""


def _is_bad_data(exc: BaseException) -> bool:
    """Redis answered, but not as our scripts do (another application's keys)."""
    import coredis.exceptions

    return isinstance(exc, (coredis.exceptions.ResponseError, TypeError, ValueError)) and not (
        isinstance(exc, coredis.exceptions.AuthenticationError)
    )


def _is_redis_error(exc: BaseException) -> bool:
    import coredis.exceptions

    return isinstance(exc, (coredis.exceptions.RedisError, OSError, trio.TooSlowError))


class RedisQuotaStore(QuotaStore):
    """Budgets in Redis, shared by every balancer whose ``shared_state`` names it.

    ``url``: ``redis://[[user]:password@]host[:port][/db][?prefix=…&timeout=…&heartbeat=…]``
    or ``rediss://…`` (TLS; ``ca=`` a CA bundle). Raises `ValueError` (password
    redacted) for a malformed URL. ``balancer_id`` names this balancer in the
    heartbeats (default: host, pid and a random suffix). The store needs its
    `run` task (the balancer starts it); until it has reached Redis it decides
    locally.
    """

    local = False

    def __init__(
        self,
        url: str,
        *,
        window_guard: float = DEFAULT_WINDOW_GUARD,
        balancer_id: str | None = None,
    ) -> None:
        if not math.isfinite(window_guard) or not 0.0 <= window_guard < 1.0:
            raise ValueError(f"window_guard must be in [0, 1) s, got {window_guard!r}")
        self.url = parse_shared_state(url)
        if self.url.guard is not None:
            window_guard = self.url.guard
        self.window_guard = window_guard
        self.period_us = round((1.0 + window_guard) * 1e6)
        self.id = balancer_id or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._limits: dict[str, Limits] = {}
        self._local: dict[str, ProviderBudget] = {}
        self._hints: dict[str, _Hint] = {}
        self._taken: dict[int, _Taken] = {}
        self._recent: dict[str, deque[tuple[float, str]]] = {}
        self._ids = itertools.count(1)
        self.shared = False
        """True while Redis answers; False in local mode (and before `run` reached it)."""
        self.live = 1
        """Live balancers, as the last heartbeat counted them (this one included)."""
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._send, self._recv = trio.open_memory_channel[_Op](_QUEUE)
        # "now" for the scripts: empty for the server's clock (tests pass their own).
        self.clock_arg: Callable[[], str] = str
        self.booking_horizon = 0.0
        """How far ahead (s) a reservation may book the request window's next free slot
        (the worker sends then) rather than be refused; 0 (the default): never book. Off:
        on a loaded machine a worker woken late for its slot bunched with the next
        window's requests at the provider (429s in the shared benchmark)."""
        self._outage_warned = False
        self._bad: set[str] = set()
        self._in_flight = trio.CapacityLimiter(_IN_FLIGHT)
        self.rtt = 0.0
        """Recent admission round trip (s): follows slower ones fast, faster ones slowly;
        it lengthens the request window (`_period_us`)."""
        self._news: dict[str, _Op] = {}  # the latest queued news per provider (buckets key)
        # Counters (stats, tests and the benchmark read them).
        self.round_trips = 0
        self.refusals = 0
        self.fallbacks = 0
        self.local_decisions = 0
        self.dropped = 0

    def __repr__(self) -> str:
        mode = "shared" if self.shared else "local"
        return f"<RedisQuotaStore {self.url.display} {mode}, {self.live} live>"

    # -- keys -----------------------------------------------------------------------------

    def _key(self, provider: str, kind: str) -> str:
        return f"{self.url.prefix}:{{{provider}}}:{kind}"

    @property
    def members_key(self) -> str:
        return f"{self.url.prefix}:members"

    # -- lifetime ---------------------------------------------------------------------------

    def _make_client(self) -> Any:
        import coredis
        from coredis.retry import NoRetryPolicy

        url = self.url
        context = None
        if url.tls:
            context = ssl.create_default_context(cafile=url.ca)
        return coredis.Redis(
            host=url.host,
            port=url.port,
            db=url.db,
            username=url.username,
            password=url.password,
            ssl_context=context,
            connect_timeout=url.timeout,
            decode_responses=True,
            retry_policy=NoRetryPolicy(),
            client_name=None,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, heartbeat, and send the background operations, until cancelled.

        Started before anything else: Redis unreachable at start-up leaves the store in
        local mode (one warning) and the heartbeat keeps trying.
        """
        client = self._make_client()
        self._client = client
        for name, source in (
            ("reserve", _scripts.RESERVE),
            ("reconcile", _scripts.RECONCILE),
            ("health", _scripts.HEALTH),
            ("heartbeat", _scripts.HEARTBEAT),
            ("move", _scripts.MOVE),
        ):
            self._scripts[name] = client.register_script(source)
        try:
            async with client, trio.open_nursery() as nursery:
                if not await self._beat():
                    self._enter_local("unreachable at start-up")
                task_status.started()
                nursery.start_soon(self._heartbeat_loop)
                nursery.start_soon(self._sender_loop)
        finally:
            self._client = None
            self.shared = False

    def _period_us(self) -> int:
        """The request window this balancer asks Redis about: 1 s, the guard, and its
        recent admission round trip. A request admitted by Redis reaches the provider
        about a round trip later; two of them admitted a window apart must still arrive
        a window apart, whatever each one's round trip was."""
        return round((1.0 + self.window_guard + min(self.rtt, _MAX_RTT_GUARD)) * 1e6)

    async def _call(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """One script call, bounded by the URL's timeout; raises on any Redis fault."""
        client = self._client
        if client is None:
            raise OSError("the shared-state store is not running")
        # The timeout judges Redis, not our own backlog: calls beyond the in-flight cap wait
        # here, unclocked, and a call's time starts when it may go out.
        async with self._in_flight:
            self.round_trips += 1
            started = trio.current_time()
            with trio.fail_after(self.url.timeout):
                reply = await self._scripts[script](keys=keys, args=args)
            if script == "reserve":
                took = trio.current_time() - started
                alpha = _RTT_UP if took > self.rtt else _RTT_DOWN
                self.rtt += alpha * (took - self.rtt)
            return reply

    async def _beat(self) -> bool:
        try:
            live = await self._call(
                "heartbeat",
                [self.members_key],
                [self.clock_arg(), self.id, self.url.heartbeat * _LIVE_BEATS],
            )
        except Exception as exc:
            if not _is_redis_error(exc):
                raise
            if self.shared:
                self._enter_local(self._describe(exc))
            return False
        if isinstance(live, int) and live >= 1 and live != self.live:
            self.live = live
            now = trio.current_time()
            for provider, limits in self._limits.items():
                self._local[provider].reconfigure(self._share(limits), now)
        if not self.shared:
            await self._restore()
        return True

    async def _heartbeat_loop(self) -> None:
        while True:
            await trio.sleep(self.url.heartbeat)
            await self._beat()

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, trio.TooSlowError):
            return f"no answer within {self.url.timeout:g}s"
        text = f"{type(exc).__name__}: {exc}"
        if self.url.password:
            text = text.replace(self.url.password, "***")
        return text

    # -- local mode -----------------------------------------------------------------------

    def _share(self, limits: Limits) -> Limits:
        """This balancer's share of ``limits`` while Redis is away: 1/live of each."""
        n = max(1, self.live)
        if n == 1:
            return limits

        def part(value: int | None) -> int | None:
            return None if value is None else max(1, value // n)

        rpm = limits.rpm
        if rpm is not None:
            # The 1-second window is what binds: give each balancer floor(cap / n) of it.
            cap = max(1, requests_per_second(rpm) // n)
            rpm = cap * 60
        return Limits(rpm=rpm, tpm=part(limits.tpm), rpd=part(limits.rpd), tpd=part(limits.tpd))

    def _enter_local(self, why: str) -> None:
        was_shared = self.shared
        self.shared = False
        self.fallbacks += was_shared
        now = trio.current_time()
        for provider, limits in self._limits.items():
            budget = self._local[provider]
            budget.reconfigure(self._share(limits), now)
            hint = self._hints[provider]
            if was_shared and budget.window is not None:
                # Others' requests of the last window (and slots they booked ahead) are
                # unknown: wait until they have all left.
                budget.holds["shared-state"] = now + 1.0 + self.window_guard + self.booking_horizon
            tokens = budget.buckets.get("tokens")
            if tokens is not None and hint.remaining_tokens is not None:
                tokens.observe(hint.remaining_tokens / max(1, self.live), None, now)
        if not self._outage_warned:
            self._outage_warned = True
            log.warning(
                "shared state %s %s: each budget is now this balancer's share (1/%d) "
                "until it answers again",
                self.url.display,
                why,
                max(1, self.live),
            )
        self.notify()

    async def _restore(self) -> None:
        """Redis answers again: replay this balancer's recent window entries, switch back."""
        now = trio.current_time()
        for provider, recent in self._recent.items():
            while recent and recent[0][0] + 1.0 + self.window_guard <= now:
                recent.popleft()
            if not recent:
                continue
            args: list[Any] = [self.clock_arg(), self.period_us]
            for at, member in recent:
                args += [member, max(1, round((now - at) * 1e6))]  # a booking ahead: now
            try:
                await self._call("move", [self._key(provider, "w")], args)
            except Exception as exc:
                if not _is_redis_error(exc):
                    raise
                return
        for provider, limits in self._limits.items():
            self._local[provider].reconfigure(self._share(limits), now)
            self._local[provider].holds.pop("shared-state", None)
            self._hints[provider].hold_until = -math.inf
        if self._outage_warned:
            log.info("shared state %s answers again: budgets are shared", self.url.display)
        self._outage_warned = False
        self.shared = True
        self.notify()

    # -- configuration ----------------------------------------------------------------------

    def configure(self, provider: str, limits: Limits, now: float, *, probe: bool = False) -> None:
        # ``probe`` is not shared: one probe per balancer would gain nothing over none.
        self._limits[provider] = limits
        budget = self._local.get(provider)
        if budget is None:
            self._local[provider] = ProviderBudget(
                self._share(limits), now, window_guard=self.window_guard
            )
            self._hints[provider] = _Hint()
            self._recent[provider] = deque()
        else:
            budget.reconfigure(self._share(limits), now)
        self.notify()

    def forget(self, provider: str) -> None:
        self._limits.pop(provider, None)
        self._local.pop(provider, None)
        self._hints.pop(provider, None)
        self._recent.pop(provider, None)
        self.notify()

    def providers(self) -> list[str]:
        return list(self._limits)

    # -- local reads ------------------------------------------------------------------------

    def _never(self, provider: str, cost: Cost) -> Admission | None:
        """A cost larger than a whole budget (configured or learned) never fits."""
        limits = self._limits.get(provider)
        hint = self._hints.get(provider)
        if limits is None or hint is None:
            return None
        tpm = limits.tpm
        if hint.learned_tpm is not None and (tpm is None or hint.learned_tpm < tpm):
            tpm = hint.learned_tpm
        for why, limit, amount in (
            ("tpm", tpm, cost.tokens),
            ("tpd", limits.tpd, cost.tokens),
        ):
            if limit is not None and amount > limit:
                return Admission(at=math.inf, fits=False, reason=why)
        return None

    def earliest(self, provider: str, cost: Cost, now: float) -> Admission:
        if provider not in self._limits:
            return Admission(at=now)
        if not self.shared:
            return self._local[provider].earliest(cost, now)
        never = self._never(provider, cost)
        if never is not None:
            return never
        hint = self._hints[provider]
        if now < hint.hold_until:
            return Admission(at=hint.hold_until, reason=hint.hold_reason)
        room = hint.remaining_requests
        if room is not None and hint.pending >= max(room, 1):
            # Claims already cover the room the last reply reported: wait for their replies
            # (each one notifies; the re-check is a safety net).
            return Admission(at=now + _RECHECK, reason=hint.hold_reason or "rpm")
        return Admission(at=now)

    def view(self, provider: str, now: float) -> QuotaView:
        limits = self._limits.get(provider)
        if limits is None:
            return QuotaView()
        if not self.shared:
            local = self._local[provider].view(now)
            return QuotaView(
                limits=limits,
                learned_rpm=local.learned_rpm,
                learned_tpm=local.learned_tpm,
                remaining_requests=local.remaining_requests,
                remaining_tokens=local.remaining_tokens,
                refill_in=local.refill_in,
                reason=local.reason,
                headroom=local.headroom,
            )
        hint = self._hints[provider]
        held = now < hint.hold_until
        return QuotaView(
            limits=limits,
            learned_rpm=hint.learned_rpm,
            learned_tpm=hint.learned_tpm,
            remaining_requests=hint.remaining_requests,
            remaining_tokens=hint.remaining_tokens,
            refill_in=max(0.0, hint.hold_until - now) if held else 0.0,
            reason=hint.hold_reason if held else None,
            headroom=0.0 if held else hint.headroom,
        )

    # -- decisions --------------------------------------------------------------------------

    def claim(self, provider: str, cost: Cost, now: float) -> Reservation:
        hint = self._hints.get(provider)
        if hint is not None:
            hint.pending += 1
        return Reservation(provider=provider, id=UNCONFIRMED, cost=cost, at=now)

    def _release_claim(self, provider: str) -> None:
        hint = self._hints.get(provider)
        if hint is not None and hint.pending > 0:
            hint.pending -= 1

    async def reserve(self, provider: str, cost: Cost, now: float) -> Admission:
        """Settles one claim of ``provider`` (see `claim`) with one round trip.

        The claim counts until the answer is in (and folded into the provider's hint):
        local reads must not promise the room it may take while it is on the wire.
        """
        try:
            return await self._reserve(provider, cost, now)
        finally:
            self._release_claim(provider)

    async def _reserve(self, provider: str, cost: Cost, now: float) -> Admission:
        limits = self._limits.get(provider)
        reservation_id = next(self._ids)
        reservation = Reservation(provider=provider, id=reservation_id, cost=cost, at=now)
        if limits is None:
            return Admission(at=now, reservation=reservation)
        if not self.shared:
            return self._reserve_local(provider, reservation, now)
        member = f"{self.id}:{reservation_id}"
        cap = 0 if limits.rpm is None else requests_per_second(limits.rpm)
        try:
            reply = await self._call(
                "reserve",
                [
                    self._key(provider, "w"),
                    self._key(provider, "b"),
                    self._key(provider, "h"),
                    self._key(provider, "d"),
                ],
                [
                    self.clock_arg(),
                    member,
                    cap,
                    self._period_us(),
                    limits.tpm or 0,
                    limits.rpd or 0,
                    limits.tpd or 0,
                    cost.prompt_tokens,
                    cost.completion_tokens,
                    self.id,
                    round(self.booking_horizon * 1e6),
                ],
            )
            granted, fits, wait, reason, next_wait, slot, buckets = self._read_reply(
                provider, reply
            )
        except Exception as exc:
            if _is_bad_data(exc):
                self._bad_data(provider, exc)
            elif not _is_redis_error(exc):
                raise
            elif self.shared:
                self._enter_local(self._describe(exc))
            if provider not in self._limits:  # removed while we waited
                return Admission(at=now, reservation=reservation)
            return self._reserve_local(provider, reservation, trio.current_time())
        issued, now = now, trio.current_time()  # the answer came now: waits count from here
        hint = self._hints.get(provider)
        if not granted:
            self.refusals += 1
            at = math.inf if wait < 0 else now + wait / 1e6
            if hint is not None and fits and at < math.inf:
                hint.hold(at, reason or None)
            self.notify()
            return Admission(at=at, fits=bool(fits), reason=reason or None)
        if hint is not None and next_wait / 1e6 > self.booking_horizon:
            hint.hold(now + next_wait / 1e6 - self.booking_horizon, "rpm")
        budget = self._local.get(provider)
        if budget is not None:
            budget.reserve(cost, now, reservation_id)  # own traffic, for a later outage
        # The server counted it when the script ran, between ``issued`` and ``now``: a send
        # later than the guard allows after ``issued`` moves it (`mark_sent`).
        send_at = now + wait / 1e6  # a booked slot (wait > 0): the worker sends then
        self._taken[reservation_id] = _Taken(member, True, slot, max(issued, send_at), buckets)
        recent = self._recent.get(provider)
        if recent is not None:
            recent.append((max(issued, send_at), member))
        return Admission(at=send_at, reservation=reservation)

    def _read_reply(self, provider: str, reply: Any) -> tuple[int, int, int, str, int, int, str]:
        """Check the reserve script's reply and fold what it says into the provider's hint."""
        if not isinstance(reply, list) or len(reply) != 12:
            raise TypeError(f"reserve reply of type {type(reply).__name__}")
        granted, fits, wait, reason, next_wait, left, tokens, lr, lt, slot, headroom, took = reply
        for value in (granted, fits, wait, next_wait, left, lr, lt, slot):
            if not isinstance(value, int):
                raise TypeError(f"reserve reply field {value!r}")
        hint = self._hints.get(provider)
        if hint is not None:
            hint.remaining_requests = None if left < 0 else left
            hint.remaining_tokens = int(float(tokens)) if tokens else None
            hint.learned_rpm = None if lr < 0 else lr
            hint.learned_tpm = None if lt < 0 else lt
            hint.headroom = min(1.0, max(0.0, float(headroom)))
        return granted, fits, wait, str(reason), next_wait, slot, str(took)

    def _reserve_local(self, provider: str, reservation: Reservation, now: float) -> Admission:
        budget = self._local[provider]
        verdict = budget.earliest(reservation.cost, now)
        if not verdict.admits(now):
            return verdict
        self.local_decisions += 1
        budget.reserve(reservation.cost, now, reservation.id)
        member = f"{self.id}:{reservation.id}"
        self._taken[reservation.id] = _Taken(member, False, -1, now)
        self._recent[provider].append((now, member))
        return Admission(at=now, reservation=reservation)

    def mark_sent(self, reservation: Reservation, now: float) -> None:
        taken = self._taken.get(reservation.id)
        if taken is None:
            return
        budget = self._local.get(reservation.provider)
        if budget is not None:
            budget.sent(reservation.id, now)
        if now - taken.stamp <= self.window_guard / 2:
            return
        taken.stamp = now
        recent = self._recent.get(reservation.provider)
        if recent is not None:
            recent.append((now, taken.member))
        if taken.shared and self.shared:
            self._queue(
                "move",
                [self._key(reservation.provider, "w")],
                [self.clock_arg(), self.period_us, taken.member, 0],
            )

    def reconcile_nowait(
        self,
        reservation: Reservation,
        used: Cost | None,
        now: float,
        observation: Observation | None = None,
    ) -> None:
        """Settle locally at once; the round trip is queued (a background task sends it)."""
        op = self._settle(reservation, used, now, observation)
        if op is not None:
            self._queue(*op)

    def observe_nowait(self, provider: str, observation: Observation, now: float) -> None:
        op = self._observe(provider, observation, now)
        if op is not None:
            self._queue(*op)

    async def reconcile(
        self,
        reservation: Reservation,
        used: Cost | None,
        now: float,
        observation: Observation | None = None,
    ) -> None:
        """As `reconcile_nowait`, but waits for the round trip."""
        op = self._settle(reservation, used, now, observation)
        await self._send_op(op)

    async def observe(self, provider: str, observation: Observation, now: float) -> None:
        """As `observe_nowait`, but waits for the round trip."""
        await self._send_op(self._observe(provider, observation, now))

    def _settle(
        self,
        reservation: Reservation,
        used: Cost | None,
        now: float,
        observation: Observation | None,
    ) -> _Op | None:
        provider = reservation.provider
        if reservation.id == UNCONFIRMED:
            self._release_claim(provider)
            if observation is not None:
                return self._observe(provider, observation, now)
            self.notify()
            return None
        taken = self._taken.pop(reservation.id, None)
        budget = self._local.get(provider)
        if budget is not None:
            budget.reconcile(reservation.id, used, now)
            if observation is not None:
                budget.observe(observation, now)
        self.notify()
        limits = self._limits.get(provider)
        if limits is None or taken is None or not taken.shared:
            if observation is not None and limits is not None:
                return self._remote_op(
                    provider, limits, Cost(0, 0), Cost(0, 0), -1, observation, now
                )
            return None
        reserved = reservation.cost
        actual = used if used is not None else Cost(reserved.prompt_tokens, 0)
        return self._remote_op(
            provider, limits, reserved, actual, taken.slot, observation, now, taken.buckets
        )

    def _observe(self, provider: str, observation: Observation, now: float) -> _Op | None:
        budget = self._local.get(provider)
        if budget is not None:
            budget.observe(observation, now)
        self.notify()
        limits = self._limits.get(provider)
        if limits is None:
            return None
        return self._remote_op(provider, limits, Cost(0, 0), Cost(0, 0), -1, observation, now)

    def _remote_op(
        self,
        provider: str,
        limits: Limits,
        reserved: Cost,
        used: Cost,
        slot: int,
        observation: Observation | None,
        now: float,
        buckets: str = "",
    ) -> _Op | None:
        """The reconcile script call for one settlement (None: nothing to tell Redis)."""
        args: list[Any] = [
            self.clock_arg(),
            limits.tpm or 0,
            reserved.prompt_tokens,
            reserved.completion_tokens,
            used.prompt_tokens,
            used.completion_tokens,
            slot,
        ]
        hints: tuple[Hint | None, ...] = (None, None, None, None)
        retry_after = exhausted = None
        if observation is not None:
            obs = sanitize(observation)
            hints = (obs.requests, obs.tokens, obs.input_tokens, obs.output_tokens)
            retry_after, exhausted = obs.retry_after, obs.exhausted_for
            hint = self._hints.get(provider)
            if hint is not None:
                # Honour it here at once; the others learn it on their next reservation.
                if retry_after:
                    hint.hold(now + retry_after, "retry-after")
                if exhausted:
                    hint.hold(now + exhausted, "daily-quota")
            if obs.empty:
                observation = None
        for h in hints:
            args += ["", "", ""] if h is None else [_num(h.limit), _num(h.remaining), _num(h.reset)]
        args += [_num(retry_after), _num(exhausted), buckets]
        if (reserved == used and observation is None) or not self.shared:
            return None  # nothing to say, or Redis is away: its state expires on its own
        keys = [self._key(provider, "b"), self._key(provider, "h"), self._key(provider, "d")]
        # Nothing to settle, only news: the latest news of a provider supersedes older news
        # still queued (see `_queue`), so answers' headers cost no round trip each.
        return ("observe" if reserved == used else "reconcile", keys, args)

    async def _send_op(self, op: _Op | None, *, queued: bool = False) -> None:
        if op is None:
            return
        if op[0] == "observe":
            latest = self._news.pop(op[1][0], None) if queued else op
            if latest is None:
                return  # sent already, with newer news
            op = ("reconcile", op[1], latest[2])
        try:
            await self._call(*op)
        except Exception as exc:
            if _is_bad_data(exc):
                self._bad_data(op[1][0], exc)
            elif not _is_redis_error(exc):
                raise
            elif self.shared:
                self._enter_local(self._describe(exc))

    def _bad_data(self, where: str, exc: BaseException) -> None:
        """Keys in our namespace that are not ours (another application's, of another
        type): that decision is made locally; one warning per provider."""
        provider = where.partition("{")[2].rpartition("}")[0] or where
        if provider not in self._bad:
            self._bad.add(provider)
            log.warning(
                "shared state %s: unexpected data for provider %s (%s); its decisions are "
                "made locally on a 1/%d share until the keys are fixed",
                self.url.display,
                provider,
                self._describe(exc),
                max(1, self.live),
            )

    def report_health(self, provider: str, reason: str, seconds: float, now: float) -> None:
        """Publish a hold (an open circuit, a refusal) for every other balancer, or clear it
        (``seconds <= 0``). This balancer's own actors already know."""
        if provider in self._limits and self.shared:
            self._queue(
                "health", [self._key(provider, "h")], [self.clock_arg(), reason, seconds, self.id]
            )

    # -- background operations --------------------------------------------------------------

    def _queue(self, script: str, keys: list[str], args: list[Any]) -> None:
        """Send it in the background (never blocks; dropped, counted, if far behind).

        News about a provider (``observe``) waiting to be sent is replaced by newer news
        (its holds kept): one round trip carries the latest.
        """
        if script == "observe":
            waiting = self._news.get(keys[0])
            if waiting is not None:
                for i in (19, 20):  # a Retry-After or daily exhaustion is not lost
                    if args[i] == "" and waiting[2][i] != "":
                        args[i] = waiting[2][i]
                self._news[keys[0]] = (script, keys, args)
                return
            self._news[keys[0]] = (script, keys, args)
        try:
            self._send.send_nowait((script, keys, args))
        except trio.WouldBlock:
            self._news.pop(keys[0], None)
            self.dropped += 1

    async def _sender_loop(self) -> None:
        recv = self._recv
        async with trio.open_nursery() as nursery:
            async for op in recv:
                batch = [op]
                with contextlib.suppress(trio.WouldBlock):
                    while len(batch) < 512:
                        batch.append(recv.receive_nowait())
                limiter = trio.CapacityLimiter(64)
                done = trio.Event()
                left = [len(batch)]

                async def one(
                    item: _Op,
                    limiter: trio.CapacityLimiter = limiter,
                    done: trio.Event = done,
                    left: list[int] = left,
                ) -> None:
                    async with limiter:
                        await self._send_op(item, queued=True)
                    left[0] -= 1
                    if not left[0]:
                        done.set()

                for item in batch:
                    nursery.start_soon(one, item)
                await done.wait()

    async def aclose(self) -> None:
        self._send.close()


def _num(value: float | None) -> str:
    if value is None:
        return ""
    return repr(float(value)) if math.isfinite(value) else ""
