"""`load_config`: a TOML or JSON file to a `BalancerConfig`, keys from the environment.

The file is first converted into a file-schema Struct (``forbid_unknown_fields``,
so a typo is an error, and exact types), then into the real configuration,
whose own checks then run. Every error is a `ConfigError` whose message names
the file, the field path (``providers[1].weight``) and what was expected.

API keys are never read from the file: a provider says ``api_key_env =
"NAME"`` and the key comes from that environment variable.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from ._config import BalancerConfig, ProviderConfig
from ._errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["load_config"]

_UNSET: Any = msgspec.UNSET


class _ProviderFile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One ``[[providers]]`` table. Unset fields keep `ProviderConfig`'s defaults.

    Choice fields (``provider`` here, ``strategy`` and others below) are plain
    strings: the configs' own checks list the valid choices in their errors.
    """

    name: str
    model: str | msgspec.UnsetType = _UNSET
    api_key_env: str | msgspec.UnsetType = _UNSET
    api_key_required: bool | msgspec.UnsetType = _UNSET
    base_url: str | msgspec.UnsetType = _UNSET
    weight: float | msgspec.UnsetType = _UNSET
    timeout: float | msgspec.UnsetType = _UNSET
    max_retries: int | msgspec.UnsetType = _UNSET
    provider: str | msgspec.UnsetType = _UNSET
    max_concurrency: int | msgspec.UnsetType = _UNSET
    mailbox_size: int | msgspec.UnsetType = _UNSET
    headers: dict[str, str] | msgspec.UnsetType = _UNSET
    api_version: str | msgspec.UnsetType = _UNSET
    rpm: int | msgspec.UnsetType = _UNSET
    tpm: int | msgspec.UnsetType = _UNSET
    rpd: int | msgspec.UnsetType = _UNSET
    tpd: int | msgspec.UnsetType = _UNSET
    default_max_tokens: int | msgspec.UnsetType = _UNSET
    proxy: str | msgspec.UnsetType | None = _UNSET


class _BalancerFile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The whole file: `BalancerConfig` fields at the top level, ``[[providers]]`` below.

    ``custom_strategy`` (a callable), ``ssl_context`` and ``transport``
    objects cannot come from a file; ``transport`` may name one.
    """

    providers: list[_ProviderFile]
    strategy: str | msgspec.UnsetType = _UNSET
    global_timeout: float | msgspec.UnsetType = _UNSET
    request_timeout: float | msgspec.UnsetType | None = _UNSET
    max_retries: int | msgspec.UnsetType = _UNSET
    retry_delay: float | msgspec.UnsetType = _UNSET
    max_retry_delay: float | msgspec.UnsetType = _UNSET
    failure_threshold: int | msgspec.UnsetType = _UNSET
    cooldown: float | msgspec.UnsetType = _UNSET
    health_check_interval: float | msgspec.UnsetType | None = _UNSET
    health_check_timeout: float | msgspec.UnsetType = _UNSET
    max_restarts: int | msgspec.UnsetType = _UNSET
    restart_window: float | msgspec.UnsetType = _UNSET
    drain_timeout: float | msgspec.UnsetType = _UNSET
    on_overload: str | msgspec.UnsetType = _UNSET
    queue_size: int | msgspec.UnsetType = _UNSET
    stream_idle_timeout: float | msgspec.UnsetType = _UNSET
    transport: str | msgspec.UnsetType = _UNSET
    max_response_bytes: int | msgspec.UnsetType = _UNSET
    verify_tls: bool | msgspec.UnsetType = _UNSET
    proxy: str | msgspec.UnsetType | None = _UNSET
    trust_env: bool | msgspec.UnsetType = _UNSET
    ca_bundle: str | msgspec.UnsetType | None = _UNSET
    seed: int | msgspec.UnsetType | None = _UNSET
    quota: str | msgspec.UnsetType = _UNSET
    quota_probe: bool | msgspec.UnsetType = _UNSET
    shared_state: str | msgspec.UnsetType | None = _UNSET
    token_estimator: str | msgspec.UnsetType = _UNSET


_HINTS = {
    "api_key": "API keys are not read from files: set api_key_env to the name of an "
    "environment variable holding the key",
    "custom_strategy": "a custom strategy is a Python callable and cannot come from a file; "
    "build the BalancerConfig in code",
    "quota_store": "a quota store is a Python object and cannot come from a file; "
    "build the BalancerConfig in code",
    "ssl_context": "an ssl.SSLContext cannot come from a file; set ca_bundle to a PEM file "
    "instead, or build the BalancerConfig in code",
    "proxy": "proxy credentials are not read from files: put the proxy URL with its "
    "credentials in HTTPS_PROXY / HTTP_PROXY in the environment",
}
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>[^`]*)`$")


def load_config(
    path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None
) -> BalancerConfig:
    """Read a balancer configuration from a ``.toml`` or ``.json`` file.

    The file holds `BalancerConfig` fields at the top level and one
    ``[[providers]]`` table (TOML) or ``"providers"`` list item (JSON) per
    provider, with `ProviderConfig` fields. A provider's key comes from the
    environment variable named by its ``api_key_env``; ``api_key`` itself is
    refused, so keys stay out of files. See ``examples/config.toml``.

    Args:
        path: the file; ``.toml`` or ``.json`` decides the format.
        env: where ``api_key_env`` variables are looked up (default: ``os.environ``).

    Raises:
        ConfigError: the file cannot be read or parsed, has an unknown key, a
            value of the wrong type or an invalid value, or names an
            environment variable that is not set. The message names the file
            and the field path, and ``.field`` holds the path.
    """
    source = os.fspath(path)
    raw = _read(source)
    if isinstance(raw, dict):
        _refuse_known_mistakes(raw, source)
    try:
        spec = msgspec.convert(raw, _BalancerFile)
    except msgspec.ValidationError as exc:
        raise _from_validation(exc, source) from None
    environ = os.environ if env is None else env
    providers = [_provider(p, i, source, environ) for i, p in enumerate(spec.providers)]
    fields = _set_fields(spec, skip={"providers"})
    try:
        return BalancerConfig(providers=providers, **fields)
    except ConfigError as exc:
        raise ConfigError(_bare(exc), field=exc.field, source=source) from None


def _read(source: str) -> Any:
    suffix = Path(source).suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ConfigError(
            f"unsupported config file type {suffix or '(none)'!r}; expected .toml or .json",
            source=source,
        )
    try:
        data = Path(source).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror or exc}", source=source) from None
    try:
        if suffix == ".toml":
            return tomllib.loads(data.decode("utf-8"))
        return json.loads(data)
    except UnicodeDecodeError:
        raise ConfigError("the file is not UTF-8 text", source=source) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", source=source) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})", source=source
        ) from None


def _refuse_known_mistakes(raw: dict[str, Any], source: str) -> None:
    """Turn the likeliest wrong keys into advice rather than "unknown field"."""
    for key in ("custom_strategy", "ssl_context"):
        if key in raw:
            raise ConfigError(_HINTS[key], field=key, source=source)
    if _has_credentials(raw.get("proxy")):
        raise ConfigError(_HINTS["proxy"], field="proxy", source=source)
    providers = raw.get("providers")
    if isinstance(providers, list):
        for i, item in enumerate(providers):
            if isinstance(item, dict) and "api_key" in item:
                raise ConfigError(_HINTS["api_key"], field=f"providers[{i}].api_key", source=source)
            if isinstance(item, dict) and _has_credentials(item.get("proxy")):
                raise ConfigError(_HINTS["proxy"], field=f"providers[{i}].proxy", source=source)


def _has_credentials(proxy: object) -> bool:
    return isinstance(proxy, str) and "@" in proxy


def _from_validation(exc: msgspec.ValidationError, source: str) -> ConfigError:
    """msgspec's ``Expected `int`, got `str` - at `$.providers[1].weight``` as a ConfigError."""
    text = str(exc)
    message, sep, where = text.rpartition(" - at `")
    if not sep:
        message, where = text, "$`"
    path = where.rstrip("`").removeprefix("$").lstrip(".")
    unknown = _UNKNOWN.match(message)
    if unknown is not None:
        name = unknown.group("field")
        path = f"{path}.{name}" if path else name
        owner = _ProviderFile if path.startswith("providers[") else _BalancerFile
        allowed = ", ".join(sorted(owner.__struct_fields__))
        message = f"unknown field {name!r}; expected one of: {allowed}"
    elif message.startswith("Object missing required field"):
        name = message.split("`")[1]
        path = f"{path}.{name}" if path else name
        message = "this field is required"
    else:
        message = message.replace("`", "")
        message = message[0].lower() + message[1:] if message else message
    return ConfigError(message, field=path, source=source)


def _provider(
    spec: _ProviderFile, index: int, source: str, environ: Mapping[str, str]
) -> ProviderConfig:
    where = f"providers[{index}]"
    fields = _set_fields(spec, skip={"api_key_env"})
    if isinstance(spec.api_key_env, str):
        name = spec.api_key_env
        value = environ.get(name)
        if not value:
            state = "is empty" if value is not None else "is not set"
            raise ConfigError(
                f"environment variable {name} {state} (provider {spec.name!r} reads its "
                f"API key from it)",
                field=f"{where}.api_key_env",
                source=source,
            )
        fields["api_key"] = value
    try:
        return ProviderConfig(**fields)
    except ConfigError as exc:
        field = f"{where}.{exc.field}" if exc.field else where
        raise ConfigError(_bare(exc), field=field, source=source) from None


def _set_fields(spec: msgspec.Struct, *, skip: set[str]) -> dict[str, Any]:
    return {
        name: value
        for name in spec.__struct_fields__
        if name not in skip and (value := getattr(spec, name)) is not _UNSET
    }


def _bare(exc: ConfigError) -> str:
    """The message of ``exc`` without the ``field: `` prefix `ConfigError` added."""
    text = str(exc)
    prefix = f"{exc.field}: "
    return text[len(prefix) :] if exc.field and text.startswith(prefix) else text
