"""Proxies: CONNECT tunnels for https origins, absolute form for http, from config or env."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest

import llmlb_actors as llmlb
from llmlb_actors._transport import HTTPRequest, ProxyError
from llmlb_actors.transports import TransportLimits, TrioTransport
from tests.network.conftest import REQUEST, answers, config, provider

if TYPE_CHECKING:
    import ssl

    from tests.network.conftest import MakeProxy, MakeTransport, Serve

PASSWORD = "pr0xy-SECRET-pass"


async def test_https_origin_is_tunnelled_through_https_proxy_from_the_env(
    transport_name: str,
    serve: Serve,
    make_proxy: MakeProxy,
    server_ssl_context: ssl.SSLContext,
    ca_file: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    origin = await serve(answers("via tunnel"), ssl_context=server_ssl_context)
    proxy = await make_proxy()
    monkeypatch.setenv("HTTPS_PROXY", proxy.url())
    cfg = config(transport_name, provider(origin.url("/v1")), ca_bundle=ca_file)
    async with llmlb.open_balancer(cfg) as lb:
        for _ in range(3):
            assert (await lb.request(REQUEST)).content == "via tunnel"
    assert proxy.tunnels == [f"127.0.0.1:{origin.port}"]  # one tunnel, kept alive
    assert len(origin.requests) == 3


async def test_http_origin_goes_to_http_proxy_in_absolute_form(
    transport_name: str, serve: Serve, make_proxy: MakeProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    origin = await serve(answers("forwarded"))
    proxy = await make_proxy()
    monkeypatch.setenv("http_proxy", proxy.url())
    async with llmlb.open_balancer(config(transport_name, provider(origin.url("/v1")))) as lb:
        assert (await lb.request(REQUEST)).content == "forwarded"
    assert proxy.forwarded == [f"http://127.0.0.1:{origin.port}/v1/chat/completions"]
    assert proxy.tunnels == []


async def test_all_proxy_covers_both_schemes(
    make_transport: MakeTransport,
    serve: Serve,
    make_proxy: MakeProxy,
    server_ssl_context: ssl.SSLContext,
    ca_file: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plain = await serve(answers("x"))
    secure = await serve(answers("x"), ssl_context=server_ssl_context)
    proxy = await make_proxy()
    monkeypatch.setenv("ALL_PROXY", proxy.url())
    transport = make_transport(ca_bundle=ca_file)
    assert (await transport.request(HTTPRequest("GET", plain.url(), []))).status == 200
    assert (await transport.request(HTTPRequest("GET", secure.url(), []))).status == 200
    assert len(proxy.forwarded) == 1
    assert len(proxy.tunnels) == 1


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "*", "127.0.0.0/8", "localhost,127.0.0.1"])
async def test_no_proxy_goes_direct(
    transport_name: str,
    serve: Serve,
    make_proxy: MakeProxy,
    monkeypatch: pytest.MonkeyPatch,
    no_proxy: str,
) -> None:
    origin = await serve(answers("direct"))
    proxy = await make_proxy()
    monkeypatch.setenv("HTTP_PROXY", proxy.url())
    monkeypatch.setenv("NO_PROXY", no_proxy)
    async with llmlb.open_balancer(config(transport_name, provider(origin.url("/v1")))) as lb:
        assert (await lb.request(REQUEST)).content == "direct"
    assert proxy.connections == 0


async def test_no_proxy_with_another_port_still_proxies(
    transport_name: str, serve: Serve, make_proxy: MakeProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    origin = await serve(answers("proxied"))
    proxy = await make_proxy()
    monkeypatch.setenv("HTTP_PROXY", proxy.url())
    monkeypatch.setenv("NO_PROXY", f"127.0.0.1:{origin.port + 1 if origin.port < 65535 else 1}")
    async with llmlb.open_balancer(config(transport_name, provider(origin.url("/v1")))) as lb:
        assert (await lb.request(REQUEST)).content == "proxied"
    assert len(proxy.forwarded) == 1


async def test_trust_env_false_ignores_proxy_variables(
    transport_name: str, serve: Serve, make_proxy: MakeProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    origin = await serve(answers("direct"))
    proxy = await make_proxy()
    monkeypatch.setenv("HTTP_PROXY", proxy.url())
    cfg = config(transport_name, provider(origin.url("/v1")), trust_env=False)
    async with llmlb.open_balancer(cfg) as lb:
        assert (await lb.request(REQUEST)).content == "direct"
    assert proxy.connections == 0


async def test_config_proxy_and_the_providers_own_proxy_wins(
    transport_name: str, serve: Serve, make_proxy: MakeProxy
) -> None:
    origin_a = await serve(answers("a"))
    origin_b = await serve(answers("b"))
    shared = await make_proxy()
    own = await make_proxy()
    cfg = config(
        transport_name,
        provider(origin_a.url("/v1"), "a"),
        provider(origin_b.url("/v1"), "b", proxy=own.url()),
        proxy=shared.url(),
        strategy="round-robin",
    )
    async with llmlb.open_balancer(cfg) as lb:
        contents = {(await lb.request(REQUEST)).content for _ in range(4)}
    assert contents == {"a", "b"}
    assert shared.forwarded
    assert all(str(origin_a.port) in t for t in shared.forwarded)
    assert own.forwarded
    assert all(str(origin_b.port) in t for t in own.forwarded)


@pytest.mark.parametrize("tls", [True, False], ids=["connect", "absolute-form"])
async def test_proxy_with_basic_credentials(
    transport_name: str,
    serve: Serve,
    make_proxy: MakeProxy,
    server_ssl_context: ssl.SSLContext,
    ca_file: str,
    tls: bool,
) -> None:
    origin = await serve(answers("authorized"), ssl_context=server_ssl_context if tls else None)
    proxy = await make_proxy(auth=("user", "p@ss:word"))
    cfg = config(
        transport_name,
        provider(origin.url("/v1")),
        proxy=proxy.url("user:p%40ss%3Aword"),
        ca_bundle=ca_file,
    )
    async with llmlb.open_balancer(cfg) as lb:
        assert (await lb.request(REQUEST)).content == "authorized"
    assert len(proxy.tunnels if tls else proxy.forwarded) == 1


@pytest.mark.parametrize("tls", [True, False], ids=["connect", "absolute-form"])
async def test_wrong_proxy_credentials_are_a_typed_error_naming_the_proxy_not_its_password(
    transport_name: str,
    serve: Serve,
    make_proxy: MakeProxy,
    server_ssl_context: ssl.SSLContext,
    ca_file: str,
    tls: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    origin = await serve(answers("never"), ssl_context=server_ssl_context if tls else None)
    proxy = await make_proxy(auth=("user", "right"))
    cfg = config(
        transport_name,
        provider(origin.url("/v1")),
        proxy=proxy.url(f"user:{PASSWORD}"),
        ca_bundle=ca_file,
    )
    async with llmlb.open_balancer(cfg) as lb:
        with pytest.raises(llmlb.LoadBalancerError) as info:
            await lb.request(REQUEST)
        stats = repr(lb.get_stats())
    [error] = info.value.errors  # not retried: bad credentials stay bad
    assert error.kind == "proxy"
    assert not error.retryable
    assert f"proxy http://127.0.0.1:{proxy.port}" in error.message
    assert "407" in error.message
    assert origin.requests == []
    observable = [str(info.value), repr(error), repr(cfg), stats, caplog.text]
    assert all(PASSWORD not in text for text in observable)


@pytest.mark.parametrize(("status", "retryable"), [(403, False), (502, True)])
async def test_proxy_refusing_the_tunnel(
    make_transport: MakeTransport,
    serve: Serve,
    make_proxy: MakeProxy,
    server_ssl_context: ssl.SSLContext,
    ca_file: str,
    status: int,
    retryable: bool,
) -> None:
    origin = await serve(answers("never"), ssl_context=server_ssl_context)
    proxy = await make_proxy()
    proxy.refuse_with = status
    transport = make_transport(proxy=proxy.url(), ca_bundle=ca_file)
    with pytest.raises(ProxyError) as info:
        await transport.request(HTTPRequest("GET", origin.url(), []))
    assert info.value.status == status
    assert str(info.value).startswith(
        f"proxy http://127.0.0.1:{proxy.port} refused the tunnel to 127.0.0.1:{origin.port}: "
        f"{status}"
    )


async def test_proxy_down_is_a_proxy_error_saying_connection_refused(
    transport_name: str, serve: Serve, unused_port: int
) -> None:
    origin = await serve(answers("never"))
    cfg = config(
        transport_name,
        provider(origin.url("/v1")),
        proxy=f"http://user:{PASSWORD}@127.0.0.1:{unused_port}",
        max_retries=0,
    )
    async with llmlb.open_balancer(cfg) as lb:
        with pytest.raises(llmlb.LoadBalancerError) as info:
            await lb.request(REQUEST)
    [error] = info.value.errors
    assert error.kind == "proxy"
    assert error.retryable  # a proxy that is down may come back
    assert error.message == f"proxy http://127.0.0.1:{unused_port}: connection refused"
    assert PASSWORD not in str(info.value)


@pytest.mark.parametrize(
    "bad",
    ["socks5://127.0.0.1:1080", "https://127.0.0.1:3128", "http://127.0.0.1:3128/path", "http://"],
)
def test_unsupported_proxy_urls_are_config_errors(bad: str) -> None:
    with pytest.raises(llmlb.ConfigError, match="proxy") as info:
        llmlb.BalancerConfig(providers=[provider("http://127.0.0.1:1/v1")], proxy=bad)
    assert info.value.field == "proxy"
    with pytest.raises(llmlb.ConfigError, match="proxy"):
        provider("http://127.0.0.1:1/v1", proxy=bad)


async def test_unsupported_proxy_in_the_environment_is_a_config_error(
    transport_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", f"socks5://user:{PASSWORD}@127.0.0.1:1080")
    with pytest.raises(llmlb.ConfigError, match="HTTPS_PROXY") as info:
        async with llmlb.open_balancer(config(transport_name, provider("http://127.0.0.1:1/v1"))):
            pass
    assert PASSWORD not in str(info.value)
    assert "trust_env=False" in str(info.value)


def test_proxy_password_is_not_in_config_reprs() -> None:
    url = f"http://user:{PASSWORD}@127.0.0.1:3128"
    cfg = llmlb.BalancerConfig(providers=[provider("http://127.0.0.1:1/v1", proxy=url)], proxy=url)
    assert PASSWORD not in repr(cfg)
    assert PASSWORD not in repr(cfg.providers[0])
    limits = TransportLimits()
    assert PASSWORD not in repr(limits)


def test_proxy_passwords_are_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registered with `_secrets`: every output path redacts them, whatever quotes them."""
    from llmlb_actors._secrets import Redactor, balancer_secrets, provider_secrets

    url = f"user:{PASSWORD}@127.0.0.1:3128"  # a bare host:port proxy means http://
    assert PASSWORD in provider_secrets(provider("http://127.0.0.1:1/v1", proxy=url))
    monkeypatch.setenv("HTTPS_PROXY", f"http://user:{PASSWORD}-env@127.0.0.1:3128")
    cfg = llmlb.BalancerConfig(providers=[provider("http://127.0.0.1:1/v1")], proxy=url)
    assert {PASSWORD, f"{PASSWORD}-env"} <= balancer_secrets(cfg)
    redact = Redactor.for_provider(cfg.providers[0], cfg)
    assert redact(f"echo {PASSWORD}-env and {PASSWORD}") == "echo *** and ***"
    assert PASSWORD not in repr(TrioTransport(proxy=url)._network)
