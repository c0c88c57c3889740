"""What counts as a credential, and the one redactor every output path uses.

A credential is any of:

* a provider's ``api_key``;
* the value of a configured header whose name looks like a credential
  (``auth``, ``key``, ``token``, ``secret``, ``cookie``), and the token alone
  of a ``"<Scheme> <token>"`` value (``Bearer sk-...``);
* the password of a proxy URL (``ProviderConfig.proxy``, ``BalancerConfig.proxy``,
  and with ``trust_env`` the ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` variables);
* whatever else a source in `PROVIDER_SOURCES` or `BALANCER_SOURCES` returns
  (register one there to protect a new field, e.g. the password of a Redis URL
  through `url_password`).

Values shorter than `MIN_LENGTH` characters are ignored: they would blank out
ordinary words, and nobody issues keys that short.

`Redactor` replaces every credential by ``***``. The provider actors pass
every error, stat, log line and crash reason through one before it leaves
them (upstreams echo what they were sent: "Incorrect API key provided:
sk-..."); `HTTPProvider` passes the errors it raises; the CLI passes every
line and file it writes. `Secret` is a ``str`` that hides itself in reprs, for
header values an `HTTPRequest` carries.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from ._config import BalancerConfig, ProviderConfig
    from ._errors import LLMError

__all__ = [
    "BALANCER_SOURCES",
    "MIN_LENGTH",
    "PROVIDER_SOURCES",
    "REDACTED",
    "Redactor",
    "Secret",
    "balancer_secrets",
    "is_credential_header",
    "provider_secrets",
    "url_password",
]

MIN_LENGTH = 4
REDACTED = "***"

_CREDENTIAL_HEADER = re.compile(r"auth|key|token|secret|cookie", re.IGNORECASE)


class Secret(str):
    """A header value that hides itself in reprs (an `HTTPRequest` may be logged).

    It is still a ``str`` for transports; only ``repr`` is redacted.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"'{REDACTED}'"


def is_credential_header(name: str) -> bool:
    """Whether a header of this name carries a credential (by its name)."""
    return _CREDENTIAL_HEADER.search(name) is not None


def url_password(url: str | None) -> list[str]:
    """The credentials in a URL's user-info (``http://user:pass@host``): the
    password, raw and percent-decoded. Empty when there are none."""
    if not url:
        return []
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    if not password:
        return []
    return [password, unquote(password)]


def _api_key(config: ProviderConfig) -> Iterable[str]:
    return [config.api_key] if config.api_key else []


def _credential_headers(config: ProviderConfig) -> Iterable[str]:
    found = []
    for name, value in config.headers.items():
        if is_credential_header(name):
            found.append(value)
            scheme, _, token = value.partition(" ")  # "Bearer <token>": the token alone too
            if token and scheme.isalpha():
                found.append(token)
    return found


def _proxy_password(url: str | None) -> list[str]:
    # A proxy may be written as a bare "user:pass@host:port", meaning http://.
    if not url:
        return []
    return url_password(url if "://" in url else f"http://{url}")


def _provider_proxy(config: ProviderConfig) -> Iterable[str]:
    return _proxy_password(config.proxy)


_PROXY_VARIABLES = ("https_proxy", "http_proxy", "all_proxy")


def _balancer_proxies(config: BalancerConfig) -> Iterable[str]:
    """``BalancerConfig.proxy``'s password, and (with ``trust_env``) the environment's."""
    found = _proxy_password(config.proxy)
    if config.trust_env:
        for name in _PROXY_VARIABLES:
            found += _proxy_password(os.environ.get(name))
            found += _proxy_password(os.environ.get(name.upper()))
    return found


#: Where a `ProviderConfig` keeps credentials. Append a source to protect a new field.
PROVIDER_SOURCES: list[Callable[[ProviderConfig], Iterable[str]]] = [
    _api_key,
    _credential_headers,
    _provider_proxy,
]


def _shared_state_password(config: BalancerConfig) -> Iterable[str]:
    return url_password(config.shared_state)


#: Where a `BalancerConfig` keeps credentials of its own (beyond its providers').
BALANCER_SOURCES: list[Callable[[BalancerConfig], Iterable[str]]] = [
    _balancer_proxies,
    _shared_state_password,
]


def provider_secrets(config: ProviderConfig) -> set[str]:
    """Every credential of one provider."""
    return {secret for source in PROVIDER_SOURCES for secret in source(config)}


def balancer_secrets(config: BalancerConfig) -> set[str]:
    """Every credential of a balancer config, its providers' included."""
    found = {secret for source in BALANCER_SOURCES for secret in source(config)}
    for provider in config.providers:
        found |= provider_secrets(provider)
    return found


class Redactor:
    """Replaces every credential it was given by ``***``, longest first."""

    __slots__ = ("_raw", "_secrets")

    def __init__(self, secrets: Iterable[str]) -> None:
        kept = {s for s in secrets if isinstance(s, str) and len(s) >= MIN_LENGTH}
        self._secrets = tuple(sorted(kept, key=len, reverse=True))
        self._raw = tuple(s.encode("utf-8", "surrogatepass") for s in self._secrets)

    @classmethod
    def for_provider(
        cls, config: ProviderConfig, balancer: BalancerConfig | None = None
    ) -> Redactor:
        """One provider's credentials, plus the balancer's own (a proxy's, say)."""
        secrets = provider_secrets(config)
        if balancer is not None:
            secrets |= {s for source in BALANCER_SOURCES for s in source(balancer)}
        return cls(secrets)

    @classmethod
    def for_balancer(cls, config: BalancerConfig) -> Redactor:
        """Every credential of the whole config."""
        return cls(balancer_secrets(config))

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def bytes(self, data: bytes) -> bytes:
        for raw in self._raw:
            if raw in data:
                data = data.replace(raw, REDACTED.encode())
        return data

    def error(self, error: LLMError) -> LLMError:
        """Redact ``error``'s message in place (and its ``args``); returns it."""
        message = self(error.message)
        if message != error.message:
            error.message = message
            error.args = (message,)
        return error

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def __repr__(self) -> str:
        return f"<Redactor of {len(self._secrets)} secrets>"
