"""Which proxy an origin goes through, and the CONNECT handshake's bytes. Sans-I/O.

Both transports resolve proxies here, so they agree on every rule:

* an explicit proxy (``BalancerConfig.proxy``, ``ProviderConfig.proxy``, or a
  transport's ``proxy=``) is used for every origin;
* otherwise, when ``trust_env`` is true, ``https_proxy``/``HTTPS_PROXY`` for
  https origins, ``http_proxy``/``HTTP_PROXY`` for http origins, then
  ``all_proxy``/``ALL_PROXY`` for both (lower case wins, as in curl);
* when ``trust_env`` is true, ``no_proxy``/``NO_PROXY`` exempts matching hosts
  from any proxy, explicit ones included (curl does the same). Its rules are
  curl's (`NoProxy`).

Only ``http://`` proxies are supported: HTTPS origins are tunnelled with
CONNECT, plain-HTTP origins are sent to the proxy in absolute form. Basic
credentials come from the proxy URL (``http://user:pass@proxy:3128``); they
are kept only as the ready ``Proxy-Authorization`` value and never appear in
a label, repr or message. Strictly private.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import SplitResult, unquote, urlsplit

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "NoProxy",
    "Proxy",
    "ProxyRoutes",
    "connect_request",
    "parse_connect_reply",
    "parse_proxy",
]

#: curl's default when a proxy URL names no port.
_DEFAULT_PROXY_PORT = 1080


class Proxy(NamedTuple):
    """One http:// proxy. Its ``repr`` holds no credentials."""

    host: str
    port: int
    label: str
    """``http://host:port``: what errors and logs show."""
    authorization: str | None
    """The ``Proxy-Authorization`` header value, or None."""
    url: str
    """The URL with its credentials, for httpx only. Never shown."""

    def __repr__(self) -> str:
        auth = ", with credentials" if self.authorization else ""
        return f"Proxy({self.label}{auth})"

    def __str__(self) -> str:
        return self.label


def parse_proxy(url: str, *, source: str = "proxy") -> Proxy:
    """A `Proxy` from ``http://[user:pass@]host[:port]`` (a bare ``host:port`` means http).

    Raises:
        ValueError: not an http:// proxy URL; the message names ``source`` and
            never repeats the credentials.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"{source} must be a non-empty http:// URL")
    text = url.strip()
    if any(c in text for c in "\r\n\0 \t"):
        raise ValueError(f"{source} must not contain whitespace, CR, LF or NUL")
    if "://" not in text:
        text = "http://" + text  # curl's reading of a bare host:port
    parts = urlsplit(text)
    shown = _without_credentials(
        parts.scheme, parts.hostname, parts.port if _port_ok(parts) else None
    )
    scheme = parts.scheme.lower()
    if scheme != "http":
        raise ValueError(
            f"{source}: only http:// proxies are supported (HTTPS origins are tunnelled "
            f"through them with CONNECT), got {scheme}:// ({shown})"
        )
    if not _port_ok(parts):
        raise ValueError(f"{source}: invalid port in the proxy URL ({shown})")
    host = parts.hostname
    if not host:
        raise ValueError(f"{source}: the proxy URL has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{source}: a proxy URL has no path or query ({shown})")
    port = parts.port or _DEFAULT_PROXY_PORT
    authorization = None
    if parts.username is not None or parts.password is not None:
        user = unquote(parts.username or "")
        password = unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        authorization = f"Basic {token}"
    bracketed = f"[{host}]" if ":" in host else host
    return Proxy(
        host=host,
        port=port,
        label=f"http://{bracketed}:{port}",
        authorization=authorization,
        url=text,
    )


def _port_ok(parts: SplitResult) -> bool:
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return False
    return True


def _without_credentials(scheme: str, host: str | None, port: int | None) -> str:
    where = host or "?"
    return f"{scheme}://{where}" + (f":{port}" if port else "")


class NoProxy:
    """curl's ``NO_PROXY`` rules, plus ``host:port`` entries.

    * ``*`` alone matches every host;
    * a name matches itself and its subdomains: ``example.com`` (or
      ``.example.com``, or ``*.example.com``) matches ``example.com`` and
      ``api.example.com`` but not ``notexample.com``; case and a trailing dot
      are ignored;
    * an IP address matches that address, a CIDR block (``10.0.0.0/8``,
      ``fd00::/8``) the addresses in it; IP hosts never match names (no DNS);
    * ``name:port`` or ``ip:port`` (``[v6]:port``) matches only that port
      (curl has no port entries; Go and httpx have them).
    """

    __slots__ = ("_all", "_entries")

    def __init__(self, value: str) -> None:
        self._entries: list[tuple[str | ipaddress.IPv4Network | ipaddress.IPv6Network, int | None]]
        self._entries = []
        self._all = value.strip() == "*"
        for raw in value.replace(" ", ",").replace("\t", ",").split(","):
            token = raw.strip()
            if not token:
                continue
            entry = _no_proxy_entry(token)
            if entry is not None:
                self._entries.append(entry)

    def __bool__(self) -> bool:
        return self._all or bool(self._entries)

    def matches(self, host: str, port: int) -> bool:
        if self._all:
            return True
        if not self._entries:
            return False
        try:
            address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(
                host.strip("[]")
            )
        except ValueError:
            address = None
        name = host.lower().rstrip(".")
        for pattern, entry_port in self._entries:
            if entry_port is not None and entry_port != port:
                continue
            if isinstance(pattern, str):
                if address is None and (name == pattern or name.endswith("." + pattern)):
                    return True
            elif address is not None and address.version == pattern.version and address in pattern:
                return True
        return False


def _no_proxy_entry(
    token: str,
) -> tuple[str | ipaddress.IPv4Network | ipaddress.IPv6Network, int | None] | None:
    port: int | None = None
    host = token
    if host.startswith("["):  # [v6] or [v6]:port
        end = host.find("]")
        if end < 0:
            return None
        rest = host[end + 1 :]
        host = host[1:end]
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif host.count(":") == 1:  # name:port or v4:port (a bare v6 address has several)
        name, _, maybe_port = host.partition(":")
        if maybe_port.isdigit():
            host, port = name, int(maybe_port)
    try:
        return ipaddress.ip_network(host, strict=False), port
    except ValueError:
        pass
    if host.startswith("*."):
        host = host[1:]
    name = host.lower().strip(".")
    if not name or "/" in name:
        return None
    return name, port


def _env(environ: Mapping[str, str], name: str) -> str | None:
    """Lower case first, as curl reads them; an empty value is unset."""
    for key in (name.lower(), name.upper()):
        value = environ.get(key)
        if value is not None and value.strip():
            return value.strip()
    return None


class ProxyRoutes:
    """Resolves the proxy of each origin, for one transport.

    ``proxy`` is the explicit proxy URL (or None); ``trust_env`` adds the
    environment's (read once, here). ``enabled`` is False when no origin can
    ever use a proxy: then transports skip proxy handling entirely.

    Raises:
        ValueError: a proxy URL (explicit or from the environment) that is not
            an http:// proxy; the message names where it came from.
    """

    __slots__ = ("_cache", "_http", "_https", "_no_proxy", "enabled")

    def __init__(
        self,
        proxy: str | None = None,
        *,
        trust_env: bool = True,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self._cache: dict[tuple[str, str, int], Proxy | None] = {}
        self._no_proxy = NoProxy(_env(env, "no_proxy") or "") if trust_env else NoProxy("")
        https: Proxy | None = None
        http: Proxy | None = None
        if proxy is not None:
            https = http = parse_proxy(proxy)
        elif trust_env:
            every = _env(env, "all_proxy")
            every_proxy = parse_proxy(every, source="ALL_PROXY") if every else None
            https_url = _env(env, "https_proxy")
            http_url = _env(env, "http_proxy")
            https = parse_proxy(https_url, source="HTTPS_PROXY") if https_url else every_proxy
            http = parse_proxy(http_url, source="HTTP_PROXY") if http_url else every_proxy
        self._https = https
        self._http = http
        self.enabled = https is not None or http is not None

    def __repr__(self) -> str:
        return f"ProxyRoutes(https={self._https!r}, http={self._http!r})"

    def for_origin(self, scheme: str, host: str, port: int) -> Proxy | None:
        """The proxy for ``scheme://host:port``, or None to connect directly."""
        key = (scheme, host, port)
        try:
            return self._cache[key]
        except KeyError:
            pass
        proxy = self._https if scheme == "https" else self._http
        if proxy is not None and self._no_proxy.matches(host, port):
            proxy = None
        if len(self._cache) < 4096:
            self._cache[key] = proxy
        return proxy


def connect_request(host: str, port: int, proxy: Proxy) -> bytes:
    """The CONNECT request that opens a tunnel to ``host:port`` through ``proxy``."""
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"host: {authority}"]
    if proxy.authorization is not None:
        lines.append(f"proxy-authorization: {proxy.authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def parse_connect_reply(buffer: bytes | bytearray) -> tuple[int, str, int] | None:
    """``(status, reason, head_length)`` once the proxy's reply head is complete, else None.

    Raises:
        ValueError: the reply does not start with an HTTP/1.x status line.
    """
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    status_line = bytes(buffer[: buffer.find(b"\r\n")]).decode("latin-1")
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise ValueError(f"not an HTTP reply: {status_line[:60]!r}")
    return int(code), reason.strip(), end + 4
