"""Budget fields of `ProviderConfig`: positive integers, or a `ConfigError` naming the field."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from llmlb_actors import ConfigError, ProviderConfig, load_config
from llmlb_actors.quota import Limits

if TYPE_CHECKING:
    from pathlib import Path

FIELDS = ("rpm", "tpm", "rpd", "tpd", "default_max_tokens")


def test_budgets_default_to_none_and_make_limits() -> None:
    plain = ProviderConfig(name="openai", model="m", api_key="sk-test")
    assert plain.limits == Limits()
    assert plain.limits.empty
    config = ProviderConfig(
        name="openai",
        model="m",
        api_key="sk-test",
        rpm=600,
        tpm=90_000,
        rpd=10_000,
        tpd=2_000_000,
        default_max_tokens=512,
    )
    assert config.limits == Limits(rpm=600, tpm=90_000, rpd=10_000, tpd=2_000_000)
    assert config.default_max_tokens == 512


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("value", [0, -5, 1.5, 600.0, "600", True, [600], 10**13])
def test_budgets_must_be_positive_integers(field: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        ProviderConfig(name="openai", model="m", api_key="sk-test", **{field: value})
    assert info.value.field == field
    assert field in str(info.value)


def test_budgets_load_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "providers": [
                    {
                        "name": "openai",
                        "model": "gpt-4o-mini",
                        "rpm": 600,
                        "tpm": 150_000,
                        "api_key_required": False,
                    },
                    {
                        "name": "claude",
                        "model": "claude-3-haiku",
                        "default_max_tokens": 256,
                        "api_key_required": False,
                    },
                ]
            }
        )
    )
    config = load_config(path, env={})
    assert config.providers[0].limits == Limits(rpm=600, tpm=150_000)
    assert config.providers[1].default_max_tokens == 256
    path.write_text(json.dumps({"providers": [{"name": "openai", "model": "m", "tpm": 0}]}))
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert "tpm" in str(info.value)


def _providers() -> list[ProviderConfig]:
    return [ProviderConfig(name="openai", model="m", api_key="sk-test", rpm=600)]


def test_balancer_quota_fields() -> None:
    from llmlb_actors import BalancerConfig
    from llmlb_actors.quota import InProcessQuotaStore

    config = BalancerConfig(providers=_providers())
    assert (config.quota, config.quota_store, config.token_estimator) == ("on", None, "auto")
    store = InProcessQuotaStore()
    config = BalancerConfig(
        providers=_providers(),
        strategy="quota",
        quota="off",
        quota_store=store,
        token_estimator="chars",
    )
    assert config.quota_store is store
    assert BalancerConfig(providers=_providers(), token_estimator=lambda r, m: 1).token_estimator


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("quota", "sometimes"),
        ("quota", True),
        ("quota_store", object()),
        ("token_estimator", "words"),
        ("token_estimator", 4),
    ],
)
def test_balancer_quota_fields_are_checked(field: str, value: Any) -> None:
    from llmlb_actors import BalancerConfig

    with pytest.raises(ConfigError) as info:
        BalancerConfig(providers=_providers(), **{field: value})
    assert info.value.field == field


def test_quota_fields_load_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "strategy": "quota",
                "quota": "off",
                "token_estimator": "chars",
                "providers": [
                    {"name": "openai", "model": "m", "rpm": 60, "api_key_required": False}
                ],
            }
        )
    )
    config = load_config(path, env={})
    assert (config.strategy, config.quota, config.token_estimator) == ("quota", "off", "chars")
