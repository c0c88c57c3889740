"""Trust: a private CA by config or by SSL_CERT_FILE, the same default for both transports,
and certificate failures as their own error kind, not retried on the same provider."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

import pytest
import truststore

import llmlb_actors as llmlb
from llmlb_actors._transport import HTTPRequest, TLSError
from tests.network.conftest import REQUEST, answers, config, provider
from tests.transport.servers import start_server

if TYPE_CHECKING:
    import trio
    import trustme

    from tests.network.conftest import MakeTransport, Serve


async def test_ca_bundle_trusts_a_private_ca(
    transport_name: str, serve: Serve, server_ssl_context: ssl.SSLContext, ca_file: str
) -> None:
    origin = await serve(answers("trusted"), ssl_context=server_ssl_context)
    cfg = config(transport_name, provider(origin.url("/v1")), ca_bundle=ca_file)
    async with llmlb.open_balancer(cfg) as lb:
        assert (await lb.request(REQUEST)).content == "trusted"


async def test_ssl_context_trusts_a_private_ca(
    transport_name: str, serve: Serve, server_ssl_context: ssl.SSLContext, ca: trustme.CA
) -> None:
    origin = await serve(answers("trusted"), ssl_context=server_ssl_context)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    cfg = config(transport_name, provider(origin.url("/v1")), ssl_context=context)
    async with llmlb.open_balancer(cfg) as lb:
        assert (await lb.request(REQUEST)).content == "trusted"


async def test_ssl_cert_file_is_the_default_trust_of_both_transports(
    make_transport: MakeTransport,
    serve: Serve,
    server_ssl_context: ssl.SSLContext,
    ca_file: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    origin = await serve(answers("trusted"), ssl_context=server_ssl_context)
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    transport = make_transport()
    assert (await transport.request(HTTPRequest("GET", origin.url(), []))).status == 200


async def test_trust_env_false_ignores_ssl_cert_file(
    make_transport: MakeTransport,
    serve: Serve,
    server_ssl_context: ssl.SSLContext,
    ca_file: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    origin = await serve(answers("never"), ssl_context=server_ssl_context)
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    transport = make_transport(trust_env=False)
    with pytest.raises(TLSError, match="certificate verify failed"):
        await transport.request(HTTPRequest("GET", origin.url(), []))


async def test_truststore_context_works_with_both_transports(
    make_transport: MakeTransport,
    serve: Serve,
    server_ssl_context: ssl.SSLContext,
    ca_file: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The OS trust store through truststore (on Linux it reads OpenSSL's locations)."""
    origin = await serve(answers("trusted"), ssl_context=server_ssl_context)
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    transport = make_transport(ssl_context=truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    assert (await transport.request(HTTPRequest("GET", origin.url(), []))).status == 200


async def test_unknown_ca_is_a_tls_error_and_fails_over_without_retrying_there(
    transport_name: str, serve: Serve, server_ssl_context: ssl.SSLContext
) -> None:
    untrusted = await serve(answers("never"), ssl_context=server_ssl_context)
    fine = await serve(answers("fine"))
    cfg = config(
        transport_name,
        provider(untrusted.url("/v1"), "untrusted"),
        provider(fine.url("/v1"), "fine"),
        strategy="failover",
        max_retries=3,
    )
    async with llmlb.open_balancer(cfg) as lb:
        answer = await lb.request(REQUEST)
        assert answer.content == "fine"
        assert answer.attempts == 2  # one try at the untrusted host, then failover at once
        assert [p.name for p in lb.get_healthy_providers()] == ["fine"]
    assert len(untrusted.connections) == 1
    assert untrusted.requests == []


async def test_every_provider_failing_tls_stops_the_spending(
    transport_name: str, serve: Serve, server_ssl_context: ssl.SSLContext
) -> None:
    """A TLS failure is not transient: once every provider failed it, later requests fail
    at once with the reasons and never connect again (until the cool-down's trial)."""
    first = await serve(answers("never"), ssl_context=server_ssl_context)
    second = await serve(answers("never"), ssl_context=server_ssl_context)
    cfg = config(
        transport_name,
        provider(first.url("/v1"), "first"),
        provider(second.url("/v1"), "second"),
        max_retries=3,
    )
    async with llmlb.open_balancer(cfg) as lb:
        with pytest.raises(llmlb.LoadBalancerError) as info:
            await lb.request(REQUEST)
        assert sorted(e.provider for e in info.value.errors) == ["first", "second"]
        assert {e.kind for e in info.value.errors} == {"tls"}
        for _ in range(10):
            with pytest.raises(llmlb.LoadBalancerError) as later:
                await lb.request(REQUEST)
            assert later.value.message.startswith("All providers are out of rotation: ")
            assert "[first] TLS: certificate verify failed" in later.value.message
            assert "[second] TLS: certificate verify failed" in later.value.message
    assert len(first.connections) == 1
    assert len(second.connections) == 1


async def test_unknown_ca_message_is_one_clear_line(
    transport_name: str, serve: Serve, server_ssl_context: ssl.SSLContext
) -> None:
    origin = await serve(answers("never"), ssl_context=server_ssl_context)
    cfg = config(transport_name, provider(origin.url("/v1")), max_retries=3)
    async with llmlb.open_balancer(cfg) as lb:
        with pytest.raises(llmlb.LoadBalancerError) as info:
            await lb.request(REQUEST)
    [error] = info.value.errors
    assert error.kind == "tls"
    assert not error.retryable
    assert error.message == (
        "TLS: certificate verify failed: unable to get local issuer certificate for 127.0.0.1"
    )


async def test_hostname_mismatch_is_a_tls_error(
    make_transport: MakeTransport, nursery: trio.Nursery, ca: trustme.CA, ca_file: str
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("other.example").configure_cert(context)
    origin = await start_server(nursery, answers("never"), ssl_context=context)
    transport = make_transport(ca_bundle=ca_file)
    with pytest.raises(TLSError) as info:
        await transport.request(HTTPRequest("GET", origin.url(), []))
    assert str(info.value) == (
        "TLS: certificate verify failed: IP address mismatch, certificate is not valid for "
        "'127.0.0.1'"
    )


def test_trust_options_are_checked_in_config(ca_file: str) -> None:
    providers = [provider("https://127.0.0.1:1/v1")]
    with pytest.raises(llmlb.ConfigError, match="ca_bundle") as info:
        llmlb.BalancerConfig(providers=providers, ca_bundle="/nonexistent/ca.pem")
    assert info.value.field == "ca_bundle"
    with pytest.raises(llmlb.ConfigError, match="not both"):
        llmlb.BalancerConfig(
            providers=providers, ca_bundle=ca_file, ssl_context=ssl.create_default_context()
        )
    with pytest.raises(llmlb.ConfigError, match="verify_tls"):
        llmlb.BalancerConfig(providers=providers, ca_bundle=ca_file, verify_tls=False)
    with pytest.raises(llmlb.ConfigError, match="ssl_context"):
        llmlb.BalancerConfig(providers=providers, ssl_context="system")  # type: ignore[arg-type]
