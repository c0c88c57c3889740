"""From a `BalancerConfig` to transports: network settings, their checks, one transport per proxy.

* `NetworkSettings`: proxy, ``trust_env``, ``ca_bundle``, ``ssl_context``:
  what both transports take besides `TransportLimits`.
* `check_config`: the network fields of a config, and whether a transport
  *instance* passed in it would really apply them. A transport you build
  keeps its own settings, so a config asking for something else is refused
  with a message saying where to set it, never silently ignored.
* `TransportSet`: the transports one balancer owns: the shared one, plus
  one per distinct ``ProviderConfig.proxy`` (a pool is per proxy route).

Strictly private.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from .._errors import ConfigError
from ._base import NetworkSettings, Transport, TransportLimits
from ._httpx import HttpxTransport
from ._proxy import ProxyRoutes, parse_proxy
from ._tls import check_trust_options
from ._trio import TrioTransport

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = [
    "TRANSPORT_NAMES",
    "NetworkSettings",
    "TransportSet",
    "check_config",
    "check_provider_proxy",
    "make_transport",
    "proxy_label",
]

TRANSPORT_NAMES = ("default", "trio", "httpx")
_DEFAULT_LIMITS = TransportLimits()


def make_transport(
    kind: str, limits: TransportLimits, network: NetworkSettings | None = None
) -> Transport:
    """Build the transport named by ``kind`` ("default", "trio" or "httpx").

    Raises:
        ValueError: an unknown ``kind``, or network settings the transport refuses.
    """
    options = (network or NetworkSettings())._asdict()
    if kind in ("default", "trio"):
        return TrioTransport(limits, **options)
    if kind == "httpx":
        return HttpxTransport(limits, **options)
    raise ValueError(f"unknown transport {kind!r}; expected 'default', 'trio' or 'httpx'")


def check_provider_proxy(who: str, proxy: object) -> None:
    """Raises ConfigError (field ``proxy``) for a proxy URL that is not http://."""
    if proxy is None:
        return
    if not isinstance(proxy, str):
        raise ConfigError(f"{who}proxy must be an http:// URL string", field="proxy")
    try:
        parse_proxy(proxy, source=f"{who}proxy")
    except ValueError as exc:
        raise ConfigError(str(exc), field="proxy") from None


def check_config(config: Any) -> None:
    """The network fields of a `BalancerConfig`, and a transport instance's agreement with them.

    ``config`` is a `BalancerConfig` (typed ``Any``: ``_config`` calls this from its
    checks, so importing it here would be a cycle).

    Raises:
        ConfigError: naming the field.
    """
    if not isinstance(config.trust_env, bool):
        raise ConfigError("trust_env must be a boolean", field="trust_env")
    check_provider_proxy("", config.proxy)
    if config.ca_bundle is not None and not isinstance(config.ca_bundle, str):
        raise ConfigError("ca_bundle must be a path (a string)", field="ca_bundle")
    try:
        check_trust_options(
            verify_tls=config.verify_tls, ca_bundle=config.ca_bundle, ssl_context=config.ssl_context
        )
    except ValueError as exc:
        text = str(exc)
        field = "ssl_context" if text.startswith("ssl_context") else "ca_bundle"
        if "verify_tls" in text:
            field = "verify_tls"
        raise ConfigError(text, field=field) from None
    transport = config.transport
    if isinstance(transport, str):
        return
    for i, provider in enumerate(config.providers):
        if getattr(provider, "proxy", None) is not None:
            raise ConfigError(
                f"providers[{i}].proxy cannot reach the transport instance you passed (it "
                "routes every provider the same way); pass transport='default' or 'httpx' so "
                "the balancer builds one per proxy, or set proxy= on the transport",
                field=f"providers[{i}].proxy",
            )
    for field, wanted, default, has in _instance_settings(config, transport):
        if wanted == default or (has is not _UNKNOWN and _same(wanted, has)):
            continue
        raise ConfigError(_mismatch(field, wanted, has, transport), field=field)


_UNKNOWN: Any = object()


def _same(a: object, b: object) -> bool:
    return a is b if isinstance(a, ssl.SSLContext) else a == b


def _instance_settings(config: Any, transport: object) -> list[tuple[str, Any, Any, Any]]:
    """``(field, the config's value, its default, the transport's value or _UNKNOWN)``."""
    limits = getattr(transport, "limits", None)
    network: NetworkSettings | None = getattr(transport, "_network", None)
    own_client = isinstance(transport, HttpxTransport) and not transport.owns_client
    if not isinstance(transport, TrioTransport | HttpxTransport) or own_client:
        network = None  # a client or class of yours decides these itself: we cannot see them
    if not isinstance(transport, TrioTransport | HttpxTransport):
        limits = None
    return [
        (
            "max_response_bytes",
            config.max_response_bytes,
            _DEFAULT_LIMITS.max_response_bytes,
            limits.max_response_bytes if limits is not None else _UNKNOWN,
        ),
        (
            "verify_tls",
            config.verify_tls,
            True,
            limits.verify_tls if limits is not None and network is not None else _UNKNOWN,
        ),
        ("proxy", config.proxy, None, network.proxy if network is not None else _UNKNOWN),
        ("trust_env", config.trust_env, True, network.trust_env if network else _UNKNOWN),
        ("ca_bundle", config.ca_bundle, None, network.ca_bundle if network else _UNKNOWN),
        ("ssl_context", config.ssl_context, None, network.ssl_context if network else _UNKNOWN),
    ]


def _mismatch(field: str, wanted: object, has: object, transport: object) -> str:
    shown = "an SSLContext" if field == "ssl_context" else _redacted(field, wanted)
    if isinstance(transport, HttpxTransport):
        where = (
            "the httpx.AsyncClient you passed decides it: configure the client"
            if not transport.owns_client
            else f"set {field}= on the transport (HttpxTransport(...))"
        )
    elif isinstance(transport, TrioTransport):
        where = f"set {field}= on the transport (TrioTransport(...))"
    else:
        where = f"a transport of your own ({type(transport).__name__}) must apply it itself"
    if field == "max_response_bytes" and isinstance(transport, TrioTransport | HttpxTransport):
        where = "set TransportLimits(max_response_bytes=...) on the transport"
    current = "" if has is _UNKNOWN else f" (the transport has {_redacted(field, has)})"
    return (
        f"{field}={shown} would not apply to the transport instance you passed{current}: "
        f"{where}, or pass transport='default' or 'httpx' to let the balancer build it"
    )


def _redacted(field: str, value: object) -> str:
    if field == "proxy" and isinstance(value, str):
        return proxy_label(value)
    return repr(value)


def proxy_label(url: str) -> str:
    """A proxy URL as it may be shown: ``http://host:port``, never its credentials."""
    try:
        return parse_proxy(url).label
    except ValueError:
        return "(invalid proxy URL)"


class TransportSet:
    """The transports of one balancer: one shared, one more per distinct provider proxy.

    Built lazily (a balancer of custom providers needs none). The environment's
    proxy variables are read, and checked, when the set is created.

    Raises:
        ConfigError: a proxy variable in the environment that is not http://.
    """

    def __init__(
        self,
        config: Any,
        limits: TransportLimits,
        factory: Callable[[TransportLimits], Transport] | None = None,
    ) -> None:
        self._config = config
        self._limits = limits
        self._factory = factory
        self._network = NetworkSettings(
            proxy=config.proxy,
            trust_env=config.trust_env,
            ca_bundle=config.ca_bundle,
            ssl_context=config.ssl_context,
        )
        self._owned: dict[str | None, Transport] = {}
        self._given: Transport | None = None
        if isinstance(config.transport, str):
            try:
                ProxyRoutes(config.proxy, trust_env=config.trust_env)
            except ValueError as exc:
                raise ConfigError(
                    f"{exc}; set trust_env=False to ignore the environment's proxy settings",
                    field="trust_env",
                ) from None
        else:
            self._given = config.transport

    def get(self, proxy: str | None = None) -> Transport:
        """The transport for a provider whose own ``proxy`` is ``proxy`` (None: the shared one)."""
        if self._given is not None:
            return self._given
        transport = self._owned.get(proxy)
        if transport is None:
            if proxy is None and self._factory is not None:
                transport = self._factory(self._limits)
            else:
                network = self._network if proxy is None else self._network._replace(proxy=proxy)
                transport = make_transport(self._config.transport, self._limits, network)
            self._owned[proxy] = transport
        return transport

    @property
    def transports(self) -> Sequence[Transport]:
        return list(self._owned.values())

    async def aclose(self) -> None:
        """Close the transports the balancer built (never one that was passed in)."""
        for transport in self._owned.values():
            await transport.aclose()
        self._owned.clear()
