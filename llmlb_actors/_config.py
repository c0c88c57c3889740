"""Balancer and provider configuration, validated when built.

`ProviderState` lives here too: it is the argument type of
``BalancerConfig.custom_strategy`` and holds a `ProviderConfig`, so keeping it
beside both keeps the import graph acyclic.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import ssl
from collections.abc import Callable, Mapping
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

import msgspec

from ._circuit import CircuitState
from ._errors import ConfigError
from ._hedge import Hedge
from ._quota._store import QuotaStore
from ._quota._types import Limits
from ._transport._base import Transport
from ._transport._settings import (
    TRANSPORT_NAMES,
    check_config,
    check_provider_proxy,
    proxy_label,
)
from .providers._base import BaseProvider
from .providers._registry import PROTOCOLS, infer_protocol

__all__ = [
    "STRATEGY_NAMES",
    "BalancerConfig",
    "ProviderConfig",
    "ProviderState",
    "StrategyName",
    "resolve_api_key",
    "with_api_keys",
]

TOKEN_ESTIMATORS = ("auto", "chars", "tiktoken")
_BAD_HEADER = re.compile(r"[\r\n\0]")
# What both transports can put in a header: printable ASCII and tab. Anything else
# (non-ASCII, control characters) would only fail when sent, inside the provider actor.
_HEADER_VALUE = re.compile(r"^[\t\x20-\x7e]*$")
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_URL = re.compile(r"^https?://[^\s/?#]+(/[^\s?#]*)?$")


def _valid_port(url: str) -> bool:
    """The URL's port, if any, is a number in 0-65535 (urlsplit checks it lazily)."""
    try:
        urlsplit(url).port  # noqa: B018 - the property raises for a bad port
    except ValueError:
        return False
    return True


#: Probing more often than this is a mistake (a probe is an API call to the provider;
#: the circuit breaker already reacts to failures at once).
MIN_HEALTH_CHECK_INTERVAL = 1.0
#: No request runs longer by default: room for a retry after a whole attempt at the
#: default ``global_timeout``, and nothing silently stuck for more than two minutes.
DEFAULT_REQUEST_TIMEOUT = 120.0
#: A backoff or Retry-After wait longer than a day is a mistake, not a policy.
MAX_RETRY_DELAY = 86_400.0


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def _check_positive(owner: str, field: str, value: object, *, allow_zero: bool = False) -> None:
    if not _is_number(value) or math.isinf(value):  # type: ignore[arg-type]
        raise ConfigError(f"{owner}{field} must be a number, got {value!r}", field=field)
    if value < 0 or (value == 0 and not allow_zero):  # type: ignore[operator]
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{owner}{field} must be {bound}, got {value!r}", field=field)


def _check_unicode(owner: str, field: str, value: str) -> None:
    """Text with a lone surrogate cannot be encoded (JSON bodies, logs): refuse it here."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError(
                f"{owner}{field} is not valid Unicode (it has a lone surrogate)", field=field
            ) from None


def _check_count(owner: str, field: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{owner}{field} must be an integer, got {value!r}", field=field)
    if value < minimum:
        raise ConfigError(f"{owner}{field} must be >= {minimum}, got {value!r}", field=field)


#: Budgets beyond this are not a real provider's (and would make pacing arithmetic absurd).
MAX_BUDGET = 10**12


def _check_positive_int(owner: str, field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{owner}{field} must be a positive integer, got {value!r}", field=field)
    if value > MAX_BUDGET:
        raise ConfigError(f"{owner}{field} must be <= {MAX_BUDGET:.0e}, got {value!r}", field=field)


class _NamedFields(msgspec.StructMeta):
    """Makes a wrong keyword a `ConfigError` that lists the valid fields.

    msgspec's own ``TypeError: Unexpected keyword argument 'modle'`` names
    neither the class's fields nor the likely typo; config files already get
    both (`load_config`), and Python callers should too. Decoding does not go
    through here, and the fields' own checks stay in ``__post_init__``.
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        fields = cls.__struct_fields__
        for name in kwargs:
            if name not in fields:
                close = difflib.get_close_matches(name, fields, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(
                    f"{cls.__name__}: unknown field {name!r}{hint}; valid fields: "
                    + ", ".join(fields),
                    field=name,
                )
        try:
            return super().__call__(*args, **kwargs)
        except TypeError as exc:
            missing = re.match(r"Missing required argument '(\w+)'", str(exc))
            if missing is None:
                raise
            raise ConfigError(
                f"{cls.__name__}: {missing.group(1)!r} is required", field=missing.group(1)
            ) from None


class ProviderConfig(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    metaclass=_NamedFields,
):
    """One provider: who to call, with which key and model.

    ==================  ==========  ===================================================
    field               default     meaning
    ==================  ==========  ===================================================
    name                required    unique id; also implies the protocol (see below)
    model               required    model id sent to the API (optional for custom
                                    ``BaseProvider`` classes)
    api_key             None        secret; never shown in reprs, logs or stats
    api_key_env         None        name of the environment variable holding the key,
                                    read when the balancer starts (not with api_key)
    api_key_required    True        False for a server that takes no key (a local
                                    vLLM or Ollama); the built-in protocols otherwise
                                    refuse a config without api_key or api_key_env
    base_url            None        API root; required for ``openai-compatible`` and
                                    ``azure`` (``https://{resource}.openai.azure.com``)
    weight              1           share under the ``weighted`` strategy (> 0)
    timeout             None        seconds per attempt; overrides ``global_timeout``
    max_retries         None        cap on attempts at this provider per request
                                    is ``max_retries + 1``
    provider            None        ``"openai"``, ``"anthropic"``, ``"gemini"``,
                                    ``"cohere"``, ``"mistral"``, ``"openai-compatible"``,
                                    ``"azure"`` or a `BaseProvider` subclass; inferred
                                    from ``name``
    max_concurrency     64          attempts this provider runs at once
    mailbox_size        None        requests queued for it (default: max_concurrency)
    headers             {}          extra HTTP headers sent with every call
    api_version         None        API version header/path where the protocol has one
                                    (Azure: the ``api-version``; None uses its v1 API)
    proxy               None        ``http://[user:pass@]host:port`` for this provider
                                    only; wins over ``BalancerConfig.proxy``
    rpm                 None        requests per minute: at most ``ceil(rpm / 60)`` in
                                    any rolling 1-second window
    tpm                 None        tokens per minute: a bucket of ``tpm`` refilling
                                    ``tpm / 60`` per second
    rpd, tpd            None        requests / tokens in any rolling 24 hours
    default_max_tokens  None        completion tokens reserved for a request that sets
                                    no ``max_tokens``
    ==================  ==========  ===================================================
    """

    name: str
    model: str | None = None
    api_key: str | None = None
    api_key_env: str | None = None
    api_key_required: bool = True
    base_url: str | None = None
    weight: float = 1.0
    timeout: float | None = None
    max_retries: int | None = None
    provider: str | type[BaseProvider] | None = None
    max_concurrency: int = 64
    mailbox_size: int | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    api_version: str | None = None
    proxy: str | None = None
    rpm: int | None = None
    tpm: int | None = None
    rpd: int | None = None
    tpd: int | None = None
    default_max_tokens: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError("ProviderConfig.name must be a non-empty string", field="name")
        _check_unicode("ProviderConfig.", "name", self.name)
        who = f"provider {self.name!r}: "
        if self.api_key is not None and not isinstance(self.api_key, str):
            raise ConfigError(f"{who}api_key must be a string", field="api_key")
        for secretish in ("api_key", "api_version"):
            value = getattr(self, secretish)
            if value is not None and (not isinstance(value, str) or _BAD_HEADER.search(value)):
                # The value is never echoed: it may be a key.
                raise ConfigError(
                    f"{who}{secretish} must be a string without CR, LF or NUL", field=secretish
                )
            if value is not None and not _HEADER_VALUE.match(value):
                raise ConfigError(
                    f"{who}{secretish} must be printable ASCII (it is sent in a header)",
                    field=secretish,
                )
        if not _is_number(self.weight) or math.isinf(self.weight) or self.weight <= 0:
            raise ConfigError(
                f"{who}weight must be a number > 0, got {self.weight!r}", field="weight"
            )
        if self.timeout is not None:
            _check_positive(who, "timeout", self.timeout)
        if self.max_retries is not None:
            _check_count(who, "max_retries", self.max_retries, minimum=0)
        _check_count(who, "max_concurrency", self.max_concurrency, minimum=1)
        if self.mailbox_size is not None:
            _check_count(who, "mailbox_size", self.mailbox_size, minimum=1)
        for budget in ("rpm", "tpm", "rpd", "tpd", "default_max_tokens"):
            value = getattr(self, budget)
            if value is not None:
                _check_positive_int(who, budget, value)
        if not isinstance(self.headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.headers.items()
        ):
            raise ConfigError(f"{who}headers must map strings to strings", field="headers")
        for key, value in self.headers.items():
            if any(c in key + value for c in "\r\n\0"):
                raise ConfigError(f"{who}headers must not contain CR, LF or NUL", field="headers")
            if not _TOKEN.match(key):
                raise ConfigError(
                    f"{who}headers: {key[:40]!r} is not a valid HTTP header name", field="headers"
                )
            if not _HEADER_VALUE.match(value):
                # The value is never echoed: it may be a credential.
                raise ConfigError(
                    f"{who}headers: the value of {key!r} must be printable ASCII",
                    field="headers",
                )
        check_provider_proxy(who, self.proxy)
        protocol = self.protocol  # raises ConfigError when unknown
        custom = not isinstance(protocol, str)
        if not custom and (not isinstance(self.model, str) or not self.model.strip()):
            raise ConfigError(f"{who}model is required", field="model")
        if self.model is not None and not isinstance(self.model, str):
            raise ConfigError(f"{who}model must be a string", field="model")
        if self.model is not None:
            _check_unicode(who, "model", self.model)
        if isinstance(protocol, str) and PROTOCOLS[protocol].needs_base_url and not self.base_url:
            raise ConfigError(f"{who}{protocol} needs a base_url", field="base_url")
        if self.base_url is not None and (
            not isinstance(self.base_url, str)
            or not _URL.match(self.base_url)
            or not _valid_port(self.base_url)
        ):
            raise ConfigError(
                f"{who}base_url must be an http:// or https:// URL, got {self.base_url!r}",
                field="base_url",
            )
        self._check_key_source(who, custom=custom)

    def _check_key_source(self, who: str, *, custom: bool) -> None:
        """Where the key comes from: ``api_key``, ``api_key_env``, or nowhere on purpose."""
        env = self.api_key_env
        if env is not None and (not isinstance(env, str) or not env or "=" in env):
            raise ConfigError(
                f"{who}api_key_env must be an environment variable name, got {env!r}",
                field="api_key_env",
            )
        if env is not None and self.api_key is not None:
            raise ConfigError(f"{who}give api_key or api_key_env, not both", field="api_key_env")
        if not isinstance(self.api_key_required, bool):
            raise ConfigError(
                f"{who}api_key_required must be True or False", field="api_key_required"
            )
        if custom or not self.api_key_required or self.api_key is not None or env is not None:
            return
        raise ConfigError(
            f"{who}the {self.provider or self.name!r} protocol needs an API key: set api_key, "
            "or api_key_env to the environment variable that holds it; for a server that "
            "takes none (a local vLLM or Ollama) set api_key_required=False",
            field="api_key",
        )

    @property
    def limits(self) -> Limits:
        """The configured budgets (``rpm``, ``tpm``, ``rpd``, ``tpd``)."""
        return Limits(rpm=self.rpm, tpm=self.tpm, rpd=self.rpd, tpd=self.tpd)

    @property
    def protocol(self) -> str | type[BaseProvider]:
        """The wire protocol name, or the custom `BaseProvider` subclass."""
        who = f"provider {self.name!r}: "
        if self.provider is None:
            inferred = infer_protocol(self.name)
            if inferred is None:
                raise ConfigError(
                    f"{who}cannot infer the protocol from the name; set provider= to one of "
                    f"{', '.join(PROTOCOLS)} or a BaseProvider subclass",
                    field="provider",
                )
            return inferred
        if isinstance(self.provider, str):
            if self.provider not in PROTOCOLS:
                raise ConfigError(
                    f"{who}unknown provider protocol {self.provider!r}; expected one of "
                    f"{', '.join(PROTOCOLS)} or a BaseProvider subclass",
                    field="provider",
                )
            return self.provider
        if isinstance(self.provider, type) and issubclass(self.provider, BaseProvider):
            return self.provider
        raise ConfigError(
            f"{who}provider must be a protocol name or a BaseProvider subclass", field="provider"
        )

    @property
    def protocol_name(self) -> str:
        """The protocol as a string (a custom class is shown by its name)."""
        protocol = self.protocol
        return protocol if isinstance(protocol, str) else f"custom:{protocol.__name__}"

    def __repr__(self) -> str:
        key = "None" if self.api_key is None else "'***'"
        env = "" if self.api_key_env is None else f", api_key_env={self.api_key_env!r}"
        return (
            f"ProviderConfig(name={self.name!r}, protocol={self._safe_protocol()!r}, "
            f"model={self.model!r}, api_key={key}{env}, base_url={self.base_url!r}, "
            f"weight={self.weight!r})"
        )

    def __rich_repr__(self) -> Any:
        yield "name", self.name
        yield "model", self.model
        yield "api_key", None if self.api_key is None else "***"

    def _safe_protocol(self) -> str:
        try:
            return self.protocol_name
        except ConfigError:
            return "?"


class ProviderState(msgspec.Struct, frozen=True, kw_only=True):
    """What a custom strategy may look at when it picks a provider.

    A snapshot: changing it changes nothing. Return one of the snapshots you
    were given.
    """

    name: str
    config: ProviderConfig
    index: int
    """Position in configuration order (added providers come last)."""
    weight: float
    is_healthy: bool
    circuit_state: CircuitState
    in_flight: int
    """Requests assigned and not finished (queued in its mailbox or running)."""
    average_latency_ms: float
    """Smoothed latency of recent successes (0 before the first)."""
    consecutive_failures: int
    total_requests: int


#: The strategy names a config may use. Each has a factory in the registry
#: `llmlb_actors.strategies.STRATEGIES`, keyed by this type (a test checks both agree).
StrategyName = Literal[
    "round-robin", "failover", "weighted", "least-busy", "latency", "quota", "custom"
]
STRATEGY_NAMES: tuple[str, ...] = get_args(StrategyName)
CustomStrategy = Callable[[list[ProviderState]], ProviderState]


class BalancerConfig(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    metaclass=_NamedFields,
):
    """How the balancer routes, retries, checks health and sends.

    ======================  ============  ===============================================
    field                   default       meaning
    ======================  ============  ===============================================
    strategy                round-robin   ``round-robin``, ``failover``, ``weighted``,
                                          ``least-busy``, ``latency``, ``custom``
    providers               required      at least one `ProviderConfig`, unique names
    custom_strategy         None          callable(list[ProviderState]) -> ProviderState
    global_timeout          30.0 s        per attempt (a provider's ``timeout`` wins)
    request_timeout         120.0 s       overall deadline per request, retries, backoff
                                          and queueing included; None: no deadline
    max_retries             3             retries after the first attempt
    retry_delay             1.0 s         base of exponential backoff (full jitter), <= 1 day
    max_retry_delay         30.0 s        cap on one backoff wait and on Retry-After, <= 1 day
    failure_threshold       3             consecutive failures that open the circuit
    cooldown                30.0 s        how long an open circuit keeps a provider out
    health_check_interval   30.0 s        active probe period (>= 1 s); None turns it off
    health_check_timeout    10.0 s        timeout of one probe
    max_restarts            5             crashes tolerated within ``restart_window``
    restart_window          60.0 s        window of the restart-intensity limit
    drain_timeout           30.0 s        how long a removed provider may finish work
    on_overload             wait          ``wait`` for mailbox space, or ``fail`` fast
    queue_size              1024          requests waiting for the dispatcher
    stream_idle_timeout     30.0 s        longest gap between stream chunks
    transport               default       ``default`` (trio + httptools) or ``httpx``,
                                          or a `Transport` instance
    max_response_bytes      16 MiB        cap on one response body (decoded)
    verify_tls              True          turning it off logs a warning
    proxy                   None          ``http://[user:pass@]host:port`` for every
                                          provider (CONNECT for https origins)
    trust_env               True          honour HTTPS_PROXY, HTTP_PROXY, ALL_PROXY,
                                          NO_PROXY, SSL_CERT_FILE, SSL_CERT_DIR
    ca_bundle               None          PEM file (or directory) of CAs to trust
                                          instead of the system store
    ssl_context             None          an ``ssl.SSLContext`` used as given
    seed                    None          seeds jitter and weighted picks (reproducible)
    latency_decay           10.0 s        decay time of the ``latency`` strategy's
                                          peak-EWMA cost
    hedge                   None          a `Hedge`: send a copy of a slow request to
                                          another provider; None: never
    retry_budget            0.2           retries allowed, as a fraction of the requests
                                          of the last 10 s, on top of 10 per second;
                                          None: only ``max_retries`` limits them
    quota                   on            ``on``: pace to providers' budgets (configured
                                          and learned from headers); ``off``: send
                                          blindly and back off on 429, as before
    quota_store             None          a `QuotaStore` (default: in-process)
    quota_probe             False         a provider with no configured limits takes
                                          one attempt at a time until its first answer
                                          (whose headers say its limits)
    shared_state            None          ``redis://host:6379/0`` (or ``rediss://``):
                                          budgets, cooldowns and learned limits
                                          shared by every balancer pointed at that
                                          Redis (see the README); password redacted
    token_estimator         auto          ``auto`` (tiktoken if installed, else
                                          characters), ``chars``, ``tiktoken``, or
                                          callable(request, model) -> prompt tokens
    ======================  ============  ===============================================
    """

    providers: list[ProviderConfig]
    strategy: StrategyName = "round-robin"
    custom_strategy: CustomStrategy | None = None
    global_timeout: float = 30.0
    request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT
    max_retries: int = 3
    retry_delay: float = 1.0
    max_retry_delay: float = 30.0
    failure_threshold: int = 3
    cooldown: float = 30.0
    health_check_interval: float | None = 30.0
    health_check_timeout: float = 10.0
    max_restarts: int = 5
    restart_window: float = 60.0
    drain_timeout: float = 30.0
    on_overload: Literal["wait", "fail"] = "wait"
    queue_size: int = 1024
    stream_idle_timeout: float = 30.0
    transport: str | Transport = "default"
    max_response_bytes: int = 16 * 1024 * 1024
    verify_tls: bool = True
    proxy: str | None = None
    trust_env: bool = True
    ca_bundle: str | None = None
    ssl_context: ssl.SSLContext | None = None
    seed: int | None = None
    latency_decay: float = 10.0
    hedge: Hedge | None = None
    retry_budget: float | None = 0.2
    quota: Literal["on", "off"] = "on"
    quota_store: QuotaStore | None = None
    quota_probe: bool = False
    shared_state: str | None = None
    token_estimator: str | Callable[[Any, str | None], int] = "auto"

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGY_NAMES:
            raise ConfigError(
                f"unknown strategy {self.strategy!r}; expected one of {', '.join(STRATEGY_NAMES)}",
                field="strategy",
            )
        if self.strategy == "custom" and not callable(self.custom_strategy):
            raise ConfigError(
                "strategy 'custom' needs custom_strategy, a callable", field="custom_strategy"
            )
        if self.custom_strategy is not None and not callable(self.custom_strategy):
            raise ConfigError("custom_strategy must be callable", field="custom_strategy")
        if not isinstance(self.providers, list | tuple) or not self.providers:
            raise ConfigError("providers must be a non-empty list", field="providers")
        seen: set[str] = set()
        for i, provider in enumerate(self.providers):
            if not isinstance(provider, ProviderConfig):
                raise ConfigError(
                    f"providers[{i}] must be a ProviderConfig, got {type(provider).__name__}",
                    field=f"providers[{i}]",
                )
            if provider.name in seen:
                raise ConfigError(
                    f"providers[{i}].name {provider.name!r} is used twice; names must be unique",
                    field=f"providers[{i}].name",
                )
            seen.add(provider.name)
        for field in ("global_timeout", "retry_delay", "max_retry_delay", "cooldown"):
            _check_positive("", field, getattr(self, field), allow_zero=field != "global_timeout")
        for field in ("health_check_timeout", "restart_window", "stream_idle_timeout"):
            _check_positive("", field, getattr(self, field))
        _check_positive("", "drain_timeout", self.drain_timeout, allow_zero=True)
        for optional in ("request_timeout", "health_check_interval"):
            if getattr(self, optional) is not None:
                _check_positive("", optional, getattr(self, optional))
        for field in ("retry_delay", "max_retry_delay"):
            delay = getattr(self, field)
            if delay > MAX_RETRY_DELAY:
                raise ConfigError(
                    f"{field} must be <= {MAX_RETRY_DELAY:g} s (a day), got {delay!r}", field=field
                )
        interval = self.health_check_interval
        if interval is not None and interval < MIN_HEALTH_CHECK_INTERVAL:
            # A period the clock cannot represent (1e-300 s) would make the health loop
            # spin without time passing; a tiny one would flood the provider with probes.
            raise ConfigError(
                f"health_check_interval must be >= {MIN_HEALTH_CHECK_INTERVAL} s "
                f"(None turns probes off), got {interval!r}",
                field="health_check_interval",
            )
        _check_count("", "max_retries", self.max_retries, minimum=0)
        _check_count("", "failure_threshold", self.failure_threshold, minimum=1)
        _check_count("", "max_restarts", self.max_restarts, minimum=0)
        _check_count("", "queue_size", self.queue_size, minimum=1)
        _check_count("", "max_response_bytes", self.max_response_bytes, minimum=1)
        if self.on_overload not in ("wait", "fail"):
            raise ConfigError("on_overload must be 'wait' or 'fail'", field="on_overload")
        if not isinstance(self.verify_tls, bool):
            raise ConfigError("verify_tls must be a boolean", field="verify_tls")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise ConfigError("seed must be an integer", field="seed")
        _check_positive("", "latency_decay", self.latency_decay)
        if self.retry_budget is not None:
            _check_positive("", "retry_budget", self.retry_budget)
        if self.hedge is not None and not isinstance(self.hedge, Hedge):
            raise ConfigError(
                f"hedge must be a Hedge or None, got {type(self.hedge).__name__}", field="hedge"
            )
        if not isinstance(self.transport, str | Transport) or (
            isinstance(self.transport, str) and self.transport not in TRANSPORT_NAMES
        ):
            raise ConfigError(
                f"transport must be 'default', 'trio', 'httpx' or a Transport, "
                f"got {self.transport!r}",
                field="transport",
            )
        check_config(self)
        self._check_quota()

    def _check_quota(self) -> None:
        if self.quota not in ("on", "off"):
            raise ConfigError(f"quota must be 'on' or 'off', got {self.quota!r}", field="quota")
        if not isinstance(self.quota_probe, bool):
            raise ConfigError("quota_probe must be a boolean", field="quota_probe")
        if self.quota_store is not None and not isinstance(self.quota_store, QuotaStore):
            raise ConfigError(
                f"quota_store must be a QuotaStore, got {type(self.quota_store).__name__}",
                field="quota_store",
            )
        self._check_shared_state()
        estimator = self.token_estimator
        if not callable(estimator) and estimator not in TOKEN_ESTIMATORS:
            raise ConfigError(
                f"token_estimator must be one of {', '.join(TOKEN_ESTIMATORS)} or a callable, "
                f"got {estimator!r}",
                field="token_estimator",
            )
        if estimator == "tiktoken":
            try:
                import tiktoken  # noqa: F401
            except ImportError:
                raise ConfigError(
                    "token_estimator 'tiktoken' needs tiktoken: pip install 'llmlb-actors[tokens]'",
                    field="token_estimator",
                ) from None

    def _check_shared_state(self) -> None:
        url = self.shared_state
        if url is None:
            return
        from ._shared._url import parse_shared_state

        try:
            parse_shared_state(url)
        except ValueError as exc:
            raise ConfigError(str(exc), field="shared_state") from None
        try:
            import coredis  # noqa: F401
        except ImportError:
            raise ConfigError(
                "shared_state needs the Redis client coredis: pip install 'llmlb-actors[redis]'",
                field="shared_state",
            ) from None
        if self.quota_store is not None:
            raise ConfigError(
                "give either shared_state or quota_store, not both", field="shared_state"
            )
        if self.quota == "off":
            raise ConfigError(
                "shared_state shares budgets and health through the quota gate: it needs "
                "quota='on'",
                field="shared_state",
            )

    def __repr__(self) -> str:
        names = ", ".join(p.name for p in self.providers)
        return f"BalancerConfig(strategy={self.strategy!r}, providers=[{names}])"

    def __rich_repr__(self) -> Any:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            # A proxy URL may carry a password: shown as http://host:port only.
            yield name, proxy_label(value) if name == "proxy" and value is not None else value


def resolve_api_key(
    provider: ProviderConfig,
    *,
    field: str = "api_key_env",
    environ: Mapping[str, str] | None = None,
) -> ProviderConfig:
    """``provider`` with ``api_key`` read from its ``api_key_env`` (itself if it has none).

    Raises:
        ConfigError: the variable is not set or is empty; ``field`` names it.
    """
    name = provider.api_key_env
    if name is None:
        return provider
    value = (os.environ if environ is None else environ).get(name)
    if not value:
        state = "is empty" if value is not None else "is not set"
        raise ConfigError(
            f"environment variable {name} {state} (provider {provider.name!r} reads its "
            "API key from it)",
            field=field,
        )
    return msgspec.structs.replace(provider, api_key=value, api_key_env=None)


def with_api_keys(config: BalancerConfig) -> BalancerConfig:
    """``config`` with every ``api_key_env`` read (when the balancer starts)."""
    if all(p.api_key_env is None for p in config.providers):
        return config
    providers = [
        resolve_api_key(p, field=f"providers[{i}].api_key_env")
        for i, p in enumerate(config.providers)
    ]
    return msgspec.structs.replace(config, providers=providers)
