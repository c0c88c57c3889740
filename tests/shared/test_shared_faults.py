"""Shared state under faults and bad input, on a real redis-server: TLS and a password,
no API key ever stored, a dead balancer's reservations expiring, malformed URLs, an
unreachable Redis at start-up and another application's keys in the namespace."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trustme

import llmlb_actors as llmlb
from llmlb_actors import ConfigError, LLMRequest
from llmlb_actors.quota import Cost, Limits, RedisQuotaStore
from llmlb_actors.sim import Behaviour, SimProvider, open_simulator
from llmlb_actors.testing import ZeroJitter
from tests.shared.conftest import RedisServer, shared_store

if TYPE_CHECKING:
    from pathlib import Path

REQ = LLMRequest(prompt="Write a funny dad joke.", max_tokens=16)
PASSWORD = "s3cret-redis-passw0rd"


def _dump(server: RedisServer) -> str:
    """Every key of the server and every value under it, as text."""
    out = []
    for key in server.command("--scan").split():
        kind = server.command("TYPE", key).strip()
        out.append(key)
        if kind == "hash":
            out.append(server.command("HGETALL", key))
        elif kind == "zset":
            out.append(server.command("ZRANGE", key, "0", "-1", "WITHSCORES"))
        elif kind == "string":
            out.append(server.command("GET", key))
    return "\n".join(out)


@pytest.fixture
def tls_redis(tmp_path: Path) -> Any:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    paths = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "cert.pem", "key": tmp_path / "key.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    cert.private_key_pem.write_to_path(str(paths["key"]))
    server = RedisServer(tmp_path, password=PASSWORD, tls={k: str(v) for k, v in paths.items()})
    server.start()
    try:
        yield server, paths["ca"]
    finally:
        server.kill()


async def test_tls_and_password(tls_redis: Any, redis_clock: Any) -> None:
    server, ca = tls_redis
    store: Any = shared_store(f"{server.url}?ca={ca}", balancer_id="tls")
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        assert store.shared
        store.configure("p", Limits(rpm=120), trio.current_time())
        now = trio.current_time()
        granted = [await store.reserve("p", Cost(1, 1), now) for _ in range(3)]
        assert [g.granted for g in granted] == [True, True, False]
        assert store.local_decisions == 0
        nursery.cancel_scope.cancel()
    assert server.command("ZCARD", "llmlb:{p}:w").strip() == "2"


async def test_wrong_password_falls_back_and_never_shows_it(
    tls_redis: Any, redis_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server, ca = tls_redis
    url = f"rediss://:wrong-{PASSWORD}@127.0.0.1:{server.port}/0?ca={ca}"
    store: Any = shared_store(url)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        assert not store.shared
        store.configure("p", Limits(rpm=120), trio.current_time())
        assert (await store.reserve("p", Cost(1, 1), trio.current_time())).granted
        nursery.cancel_scope.cancel()
    text = caplog.text + repr(store) + str(store.url)
    assert PASSWORD not in text
    assert "wrong-" not in text
    assert (
        sum(r.levelno == logging.WARNING for r in caplog.records if r.name == "llmlb_actors.shared")
        == 1
    )


async def test_no_api_key_or_password_is_stored_in_redis(tls_redis: Any, redis_clock: Any) -> None:
    """Run traffic through a password-protected Redis, failures and learned limits
    included, then read every key and value back: no credential is there."""
    server, ca = tls_redis
    key = "sk-test-VERY-secret-api-key-0123456789"
    specs = [
        SimProvider(
            name="a", protocol="openai", api_key=key, behaviour=Behaviour(latency=0.05, rpm=600)
        ),
        SimProvider(
            name="b",
            protocol="anthropic",
            api_key=key + "b",
            behaviour=Behaviour(latency=0.05, faults={"500": 0.3}),
        ),
    ]
    async with open_simulator(specs) as sim:
        store: Any = shared_store(f"{server.url}?ca={ca}", balancer_id="leak")
        async with llmlb.open_balancer(
            providers=[sim.provider_config("a", rpm=600), sim.provider_config("b", tpm=100_000)],
            quota_store=store,
            health_check_interval=None,
            rng=ZeroJitter(),
        ) as lb:
            async with trio.open_nursery() as nursery:
                for _ in range(40):
                    nursery.start_soon(_try, lb)
            await trio.sleep(1)
            assert store.shared
    dump = _dump(server)
    assert "llmlb:{a}:w" in dump  # the dump did see the data
    for secret in (key, key + "b", PASSWORD, key[-12:]):
        assert secret not in dump


async def _try(lb: Any) -> None:
    with contextlib.suppress(llmlb.LLMLBError):
        await lb.request(REQ)


async def test_a_dead_balancers_reservations_expire(
    redis_server: RedisServer, redis_clock: Any
) -> None:
    """A balancer that dies holding reservations leaks them only until they expire: every
    key has a TTL, and the budget is whole again once the tokens have refilled."""
    dead: Any = shared_store(redis_server.url, balancer_id="dead")
    alive: Any = shared_store(redis_server.url, balancer_id="alive")
    limits = Limits(rpm=600, tpm=600)  # 10 tokens a second refill
    async with trio.open_nursery() as nursery:
        await nursery.start(dead.run)
        await nursery.start(alive.run)
        for store in (dead, alive):
            store.configure("p", limits, trio.current_time())
        got = await dead.reserve("p", Cost(100, 400), trio.current_time())
        assert got.granted
        dead_scope_keys = redis_server.command("--scan", "--pattern", "llmlb:{p}:*").split()
        assert sorted(dead_scope_keys) == ["llmlb:{p}:b", "llmlb:{p}:w"]
        # Dies without settling. Every key expires on its own, at the latest when full.
        for key in dead_scope_keys:
            ttl = int(redis_server.command("PTTL", key))
            # A window entry counts for a period but is kept 2.5 s (any balancer's period).
            assert 0 < ttl <= (51_000 if key.endswith(":b") else 3_600), (key, ttl)
        assert not (await alive.reserve("p", Cost(200, 0), trio.current_time())).granted
        await trio.sleep(50)  # 500 tokens at 10 a second
        assert (await alive.reserve("p", Cost(600, 0), trio.current_time())).granted
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("http://127.0.0.1:6379", "scheme"),
        ("redis://", "no host"),
        ("redis://127.0.0.1:99999/0", "malformed"),
        ("redis://127.0.0.1:6379/zero", "database number"),
        ("redis://127.0.0.1:6379/0?prefix=a b", "prefix"),
        ("redis://127.0.0.1:6379/0?timeout=-1", "timeout"),
        ("redis://127.0.0.1:6379/0?colour=blue", "unknown option"),
        ("redis://127.0.0.1:6379/0?guard=2", "guard"),
        ("redis://:hunter2-password@127.0.0.1:6379/0?ca=/x.pem", "rediss"),
        (":hunter2-password@127.0.0.1:6379", "scheme"),
    ],
)
def test_malformed_urls_are_config_errors(url: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        llmlb.BalancerConfig(
            providers=[
                llmlb.ProviderConfig(name="a", provider="openai", model="m", api_key="k" * 8)
            ],
            shared_state=url,
        )
    assert info.value.field == "shared_state"
    assert needle in str(info.value)
    assert "hunter2" not in str(info.value)


def test_shared_state_conflicts_are_config_errors() -> None:
    providers = [llmlb.ProviderConfig(name="a", provider="openai", model="m", api_key="k" * 8)]
    with pytest.raises(ConfigError, match="quota='on'"):
        llmlb.BalancerConfig(providers=providers, shared_state="redis://127.0.0.1", quota="off")
    with pytest.raises(ConfigError, match="not both"):
        llmlb.BalancerConfig(
            providers=providers,
            shared_state="redis://127.0.0.1",
            quota_store=RedisQuotaStore("redis://127.0.0.1"),
        )


def test_the_password_is_a_registered_secret() -> None:
    from llmlb_actors._secrets import Redactor

    config = llmlb.BalancerConfig(
        providers=[llmlb.ProviderConfig(name="a", provider="openai", model="m", api_key="k" * 8)],
        shared_state="redis://user:p%40ss-word-1@127.0.0.1:6379/0",
    )
    redact = Redactor.for_balancer(config)
    assert (
        redact("url redis://user:p%40ss-word-1@h and p@ss-word-1")
        == "url redis://user:***@h and ***"
    )
    store = RedisQuotaStore(config.shared_state or "")
    assert "ss-word" not in repr(store)
    assert "ss-word" not in repr(store.url)


async def test_unreachable_redis_at_start_up(
    redis_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The balancer starts anyway, on local budgets, and says so once."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    async with open_simulator(
        [SimProvider(name="a", behaviour=Behaviour(latency=0.05, rpm=600))]
    ) as sim:
        async with llmlb.open_balancer(
            providers=[sim.provider_config("a", rpm=600)],
            shared_state=f"redis://127.0.0.1:{port}/0",
            health_check_interval=None,
        ) as lb:
            for _ in range(3):
                await lb.request(REQ)
            await trio.sleep(5)  # the heartbeat keeps trying, silently
            await lb.request(REQ)
        assert sim.stats("a").rate_limited == 0
    warnings = [
        r
        for r in caplog.records
        if r.name == "llmlb_actors.shared" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1
    assert "unreachable at start-up" in warnings[0].getMessage()


async def test_another_applications_keys_in_the_namespace(
    redis_server: RedisServer, redis_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A key of the wrong type where the window should be: that provider's decisions are
    made locally (one warning), the others stay shared, and no actor crashes."""
    redis_server.command("SET", "llmlb:{a}:w", "not-a-window")
    redis_server.command("LPUSH", "llmlb:{a}:h", "not-a-hash")
    specs = [SimProvider(name=n, behaviour=Behaviour(latency=0.05)) for n in ("a", "b")]
    async with open_simulator(specs) as sim:
        store: Any = shared_store(redis_server.url)
        async with llmlb.open_balancer(
            providers=[sim.provider_config(n, rpm=6000) for n in ("a", "b")],
            quota_store=store,
            health_check_interval=None,
            strategy="round-robin",
        ) as lb:
            results = [await lb.request(REQ) for _ in range(10)]
            assert store.shared
            stats = lb.get_stats()
        assert all(r.content for r in results)
        assert stats["a"].restarts == 0
        assert stats["b"].restarts == 0
        assert sim.stats("a").requests + sim.stats("b").requests == 10
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "llmlb_actors.shared" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1, warnings
    assert "provider a" in warnings[0]
    assert redis_server.command("GET", "llmlb:{a}:w").strip() == "not-a-window"
