"""``lb.health_report()``: per provider the status, the reason a probe failed (HTTP status
and the provider's message, timeout, refused connection, TLS) and how long it took;
``health_check()`` keeps returning ``{name: bool}``."""

from __future__ import annotations

import ssl
from functools import partial
from typing import TYPE_CHECKING

import pytest
import trio
import trustme

import llmlb_actors as llmlb
from llmlb_actors.sim import SimProvider, open_simulator

if TYPE_CHECKING:
    from trio.testing import MockClock

KEY = "sk-health-report-KEY-77"


async def _silent(stream: trio.SocketStream) -> None:
    """Accepts a connection and never answers (a black-holed upstream)."""
    async with stream:
        await trio.sleep_forever()


async def _tls(stream: trio.SSLStream[trio.SocketStream]) -> None:
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError:
        return  # the client refused our certificate, as it should


async def test_health_report_says_why_and_how_long(autojump_clock: MockClock) -> None:
    ca = trustme.CA()  # a private CA nobody trusts: the handshake must fail
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    simulated = [
        SimProvider(name="up", protocol="openai", api_key=KEY),
        SimProvider(name="wrong-key", protocol="anthropic", api_key=KEY),
    ]
    async with open_simulator(simulated) as sim, trio.open_nursery() as nursery:
        silent = (await nursery.start(partial(trio.serve_tcp, host="127.0.0.1"), _silent, 0))[0]
        serve_tls = partial(trio.serve_ssl_over_tcp, host="127.0.0.1")
        tls = (await nursery.start(serve_tls, _tls, 0, server_context))[0]
        silent_port = silent.socket.getsockname()[1]
        tls_port = tls.transport_listener.socket.getsockname()[1]

        def compatible(name: str, base_url: str) -> llmlb.ProviderConfig:
            return llmlb.ProviderConfig(
                name=name,
                provider="openai-compatible",
                base_url=base_url,
                model="m",
                api_key_required=False,
            )

        providers = [
            sim.provider_config("up"),
            sim.provider_config("wrong-key", api_key="sk-not-the-key"),
            compatible("refused", f"http://127.0.0.1:{sim.redirect_port}/v1"),
            compatible("silent", f"http://127.0.0.1:{silent_port}/v1"),
            compatible("untrusted", f"https://127.0.0.1:{tls_port}/v1"),
        ]
        async with llmlb.open_balancer(
            providers=providers, health_check_timeout=5.0, health_check_interval=None
        ) as lb:
            report = await lb.health_report()
            assert await lb.health_check() == {
                "up": True,
                "wrong-key": False,
                "refused": False,
                "silent": False,
                "untrusted": False,
            }
        nursery.cancel_scope.cancel()

    assert list(report) == ["up", "wrong-key", "refused", "silent", "untrusted"]
    up = report["up"]
    assert (up.name, up.status, up.healthy, up.reason, up.http_status) == (
        "up",
        "up",
        True,
        None,
        None,
    )
    assert 0 <= up.latency < 5.0

    wrong = report["wrong-key"]
    assert (wrong.status, wrong.healthy, wrong.http_status, wrong.kind) == (
        "down",
        False,
        401,
        "http",
    )
    assert wrong.reason is not None
    assert wrong.reason.startswith("HTTP 401: ")
    assert "key" in wrong.reason.lower()  # the provider's own message
    assert "sk-not-the-key" not in wrong.reason

    refused = report["refused"]
    assert refused.kind == "connection"
    assert refused.http_status is None
    assert refused.reason is not None
    assert "connect" in refused.reason.lower()

    silent_report = report["silent"]
    assert silent_report.kind == "timeout"
    assert silent_report.reason == "no answer within 5s (health_check_timeout)"
    assert silent_report.latency == pytest.approx(5.0)

    untrusted = report["untrusted"]
    assert untrusted.status == "down"
    assert untrusted.reason is not None
    assert "certificate" in untrusted.reason.lower()


class _Crashing(llmlb.BaseProvider):
    probes = 0

    async def make_request(self, request: llmlb.LLMRequest) -> llmlb.LLMResponse:
        raise RuntimeError("a bug in this provider")

    async def check_health(self) -> bool:
        type(self).probes += 1
        return True


async def test_a_provider_out_of_rotation_is_reported_without_a_probe(
    autojump_clock: MockClock,
) -> None:
    crashing = llmlb.ProviderConfig(name="crashing", provider=_Crashing)
    async with llmlb.open_balancer(
        providers=[crashing], max_restarts=0, health_check_interval=None
    ) as lb:
        with pytest.raises(llmlb.LoadBalancerError):
            await lb.request(llmlb.LLMRequest(prompt="hi"))
        report = await lb.health_report()
        assert await lb.health_check() == {"crashing": False}
    assert _Crashing.probes == 0
    assert report["crashing"].status == "down"
    assert report["crashing"].reason is not None
    assert report["crashing"].reason.startswith("out of rotation: ")
