"""A transport you pass gets the balancer's settings, or the balancer says what to do instead."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

import llmlb_actors as llmlb
from llmlb_actors.transports import HttpxTransport, Transport, TransportLimits, TrioTransport
from tests.network.conftest import REQUEST, answers, chat_body, provider
from tests.transport.servers import ServerConn, response

if TYPE_CHECKING:
    from trio.testing import MockClock

    from tests.network.conftest import Serve


def test_the_public_transports_module() -> None:
    import llmlb_actors.transports as transports

    assert sorted(transports.__all__) == [
        "HttpxTransport",
        "Transport",
        "TransportLimits",
        "TrioTransport",
    ]
    assert isinstance(TrioTransport(), Transport)
    assert isinstance(HttpxTransport(), Transport)
    for cls in (TrioTransport, HttpxTransport, Transport):
        assert cls.__module__ == "llmlb_actors.transports"


async def test_own_httpx_client_keeps_the_balancers_timeouts(
    serve: Serve, autojump_clock: MockClock
) -> None:
    """httpx's 5 s default timeout must not replace the balancer's 30 s attempt deadline."""

    async def six_seconds(conn: ServerConn) -> None:
        while await conn.read_request() is not None:
            await trio.sleep(6)
            await conn.send(response(200, chat_body("late but fine")))

    origin = await serve(six_seconds)
    async with httpx.AsyncClient() as client:  # timeout=5 s, httpx's default
        cfg = llmlb.BalancerConfig(
            providers=[provider(origin.url("/v1"))],
            transport=HttpxTransport(client=client),
            health_check_interval=None,
            max_retries=0,
        )
        async with llmlb.open_balancer(cfg) as lb:
            assert (await lb.request(REQUEST)).content == "late but fine"


async def test_own_httpx_client_gets_the_size_cap(serve: Serve) -> None:
    origin = await serve(answers("x" * 5000))
    async with httpx.AsyncClient() as client:
        cfg = llmlb.BalancerConfig(
            providers=[provider(origin.url("/v1"))],
            transport=HttpxTransport(TransportLimits(max_response_bytes=1000), client=client),
            max_response_bytes=1000,
            health_check_interval=None,
            max_retries=0,
        )
        async with llmlb.open_balancer(cfg) as lb:
            with pytest.raises(llmlb.LoadBalancerError, match="too large"):
                await lb.request(REQUEST)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_response_bytes", 1000),
        ("verify_tls", False),
        ("proxy", "http://127.0.0.1:3128"),
        ("trust_env", False),
        ("ca_bundle", __file__),
        ("ssl_context", ssl.create_default_context()),
    ],
)
@pytest.mark.parametrize("kind", ["trio", "httpx", "own-client", "own-class"])
async def test_settings_the_transport_would_not_apply_are_a_config_error(
    field: str, value: Any, kind: str
) -> None:
    class OwnTransport:
        async def request(self, call: Any) -> Any:
            raise NotImplementedError

        def stream(self, call: Any) -> Any:
            raise NotImplementedError

        async def aclose(self) -> None:
            pass

    client = httpx.AsyncClient()
    transport: Any = {
        "trio": lambda: TrioTransport(),
        "httpx": lambda: HttpxTransport(),
        "own-client": lambda: HttpxTransport(client=client),
        "own-class": OwnTransport,
    }[kind]()
    try:
        with pytest.raises(llmlb.ConfigError) as info:
            llmlb.BalancerConfig(
                providers=[provider("http://127.0.0.1:1/v1")], transport=transport, **{field: value}
            )
        assert info.value.field == field
        message = str(info.value)
        assert "transport" in message
        assert "pass transport=" in message or "on the transport" in message
    finally:
        await transport.aclose()
        await client.aclose()


async def test_matching_settings_on_a_transport_instance_are_fine() -> None:
    transport = TrioTransport(TransportLimits(max_response_bytes=1000), trust_env=False)
    llmlb.BalancerConfig(
        providers=[provider("http://127.0.0.1:1/v1")],
        transport=transport,
        max_response_bytes=1000,
        trust_env=False,
    )
    await transport.aclose()


async def test_a_providers_proxy_with_a_transport_instance_is_a_config_error() -> None:
    transport = TrioTransport()
    with pytest.raises(llmlb.ConfigError, match="proxy") as info:
        llmlb.BalancerConfig(
            providers=[provider("http://127.0.0.1:1/v1", proxy="http://127.0.0.1:3128")],
            transport=transport,
        )
    assert info.value.field == "providers[0].proxy"
    await transport.aclose()
