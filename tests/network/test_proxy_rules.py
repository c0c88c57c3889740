"""Proxy selection rules (sans-I/O): curl's NO_PROXY matching and which variable applies."""

from __future__ import annotations

import pytest

from llmlb_actors._transport._proxy import NoProxy, ProxyRoutes, parse_proxy


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "expected"),
    [
        ("*", "api.openai.com", 443, True),
        (" * ", "10.0.0.1", 80, True),
        ("example.com", "example.com", 443, True),
        ("example.com", "api.example.com", 443, True),
        ("example.com", "notexample.com", 443, False),
        ("example.com", "example.com.evil", 443, False),
        (".example.com", "example.com", 443, True),  # curl drops the leading dot
        (".example.com", "a.b.example.com", 443, True),
        ("*.example.com", "api.example.com", 443, True),
        ("EXAMPLE.com.", "Api.Example.COM", 443, True),  # case and trailing dots
        ("example.com", "api.example.com.", 443, True),
        ("localhost, example.com", "example.com", 443, True),
        ("localhost example.com", "example.com", 443, True),  # blanks separate too
        ("127.0.0.1", "127.0.0.1", 8080, True),
        ("127.0.0.1", "127.0.0.2", 8080, False),
        ("10.0.0.0/8", "10.20.30.40", 443, True),
        ("10.0.0.0/8", "11.0.0.1", 443, False),
        ("::1", "::1", 443, True),
        ("fd00::/8", "fd12::5", 443, True),
        ("10.0.0.0/8", "ten.example", 443, False),  # names are never resolved
        ("127.0.0.1", "localhost", 443, False),
        ("example.com:8443", "api.example.com", 8443, True),  # ports: only that port
        ("example.com:8443", "api.example.com", 443, False),
        ("127.0.0.1:9000", "127.0.0.1", 9000, True),
        ("127.0.0.1:9000", "127.0.0.1", 9001, False),
        ("[::1]:9000", "::1", 9000, True),
        ("", "example.com", 443, False),
        ("*,example.org", "example.com", 443, False),  # curl: "*" only as the whole value
    ],
)
def test_no_proxy_matching(no_proxy: str, host: str, port: int, expected: bool) -> None:
    assert NoProxy(no_proxy).matches(host, port) is expected


def test_variables_by_scheme_lower_case_first() -> None:
    env = {
        "https_proxy": "http://lower:1",
        "HTTPS_PROXY": "http://upper:1",
        "HTTP_PROXY": "http://plain:2",
        "ALL_PROXY": "http://every:3",
        "NO_PROXY": "internal.example",
    }
    routes = ProxyRoutes(environ=env)
    assert str(routes.for_origin("https", "api.example.com", 443)) == "http://lower:1"
    assert str(routes.for_origin("http", "api.example.com", 80)) == "http://plain:2"
    assert routes.for_origin("https", "svc.internal.example", 443) is None
    only_all = ProxyRoutes(environ={"all_proxy": "every:3128"})
    assert str(only_all.for_origin("https", "x", 443)) == "http://every:3128"
    assert str(only_all.for_origin("http", "x", 80)) == "http://every:3128"
    assert not ProxyRoutes(environ=env, trust_env=False).enabled
    assert not ProxyRoutes(environ={"HTTPS_PROXY": ""}).enabled


def test_explicit_proxy_wins_but_no_proxy_still_exempts() -> None:
    routes = ProxyRoutes(
        "http://mine:8080", environ={"HTTPS_PROXY": "http://env:1", "NO_PROXY": "direct.example"}
    )
    assert str(routes.for_origin("https", "api.example.com", 443)) == "http://mine:8080"
    assert routes.for_origin("https", "direct.example", 443) is None
    strict = ProxyRoutes("http://mine:8080", trust_env=False, environ={"NO_PROXY": "*"})
    assert str(strict.for_origin("https", "direct.example", 443)) == "http://mine:8080"


def test_proxy_urls() -> None:
    proxy = parse_proxy("http://us%40er:p%3Ass@proxy.corp:3128")
    assert proxy.label == "http://proxy.corp:3128"
    assert proxy.authorization == "Basic dXNAZXI6cDpzcw=="  # "us@er:p:ss"
    assert "p%3Ass" not in repr(proxy)
    assert "p:ss" not in repr(proxy)
    assert parse_proxy("proxy.corp").port == 1080  # curl's default port
    assert parse_proxy("[::1]:3128").label == "http://[::1]:3128"
    with pytest.raises(ValueError, match="only http://") as info:
        parse_proxy("socks5h://user:secret@proxy:1080")
    assert "secret" not in str(info.value)
