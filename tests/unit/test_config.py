from __future__ import annotations

from typing import Any

import pytest

import llmlb_actors as llmlb
from llmlb_actors import BaseProvider, ConfigError, ProviderConfig
from llmlb_actors.providers._registry import infer_protocol


def provider(**kw: Any) -> ProviderConfig:
    fields: dict[str, Any] = {"name": "openai", "model": "m", "api_key": "k"}
    fields.update(kw)
    return ProviderConfig(**fields)


def balancer(**kw: Any) -> llmlb.BalancerConfig:
    fields: dict[str, Any] = {"providers": [provider()]}
    fields.update(kw)
    return llmlb.BalancerConfig(**fields)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("openai", "openai"),
        ("claude", "anthropic"),
        ("anthropic", "anthropic"),
        ("gemini", "gemini"),
        ("google", "gemini"),
        ("cohere", "cohere"),
        ("mistral", "mistral"),
        ("openai-eu", "openai"),
        ("claude_2", "anthropic"),
        ("OpenAI", "openai"),
        ("my-llm", None),
        ("openaix", None),
    ],
)
def test_protocol_inference(name: str, expected: str | None) -> None:
    assert infer_protocol(name) == expected


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"strategy": "random"}, "strategy"),
        ({"providers": []}, "providers"),
        ({"providers": [provider(), provider()]}, "providers[1].name"),
        ({"strategy": "custom"}, "custom_strategy"),
        ({"global_timeout": -1}, "global_timeout"),
        ({"global_timeout": 0}, "global_timeout"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": 1.5}, "max_retries"),
        ({"retry_delay": -0.1}, "retry_delay"),
        ({"request_timeout": 0}, "request_timeout"),
        ({"health_check_interval": 0.5}, "health_check_interval"),
        ({"retry_delay": 86_401}, "retry_delay"),
        ({"max_retry_delay": 1e300}, "max_retry_delay"),
        ({"health_check_interval": 1e-300}, "health_check_interval"),
        ({"cooldown": "x"}, "cooldown"),
        ({"on_overload": "drop"}, "on_overload"),
        ({"transport": "curl"}, "transport"),
        ({"providers": ["openai"]}, "providers[0]"),
    ],
)
def test_balancer_config_errors_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        balancer(**kwargs)
    assert info.value.field == field
    assert field.split("[")[0] in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"weight": 0}, "weight"),
        ({"weight": -2}, "weight"),
        ({"weight": "heavy"}, "weight"),
        ({"weight": float("nan")}, "weight"),
        ({"name": "my-llm"}, "provider"),
        ({"provider": "bard"}, "provider"),
        ({"provider": int}, "provider"),
        ({"model": None}, "model"),
        ({"model": "  "}, "model"),
        ({"provider": "openai-compatible"}, "base_url"),
        ({"base_url": "ftp://x"}, "base_url"),
        ({"base_url": "http://h:99999/"}, "base_url"),
        ({"base_url": "http://h:port/"}, "base_url"),
        ({"timeout": -1}, "timeout"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"name": ""}, "name"),
        ({"headers": {"x": "a\r\nb"}}, "headers"),
        ({"api_key": "sk-abc\nx"}, "api_key"),
        ({"api_version": "2023\r\n"}, "api_version"),
    ],
)
def test_provider_config_errors_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        provider(**kwargs)
    assert info.value.field == field
    assert field in str(info.value)


def test_custom_provider_needs_no_model() -> None:
    class Mine(BaseProvider):
        pass

    cfg = ProviderConfig(name="anything", provider=Mine)
    assert cfg.protocol is Mine
    assert cfg.protocol_name == "custom:Mine"


def test_two_providers_may_share_a_protocol() -> None:
    cfg = balancer(providers=[provider(name="openai-us"), provider(name="eu", provider="openai")])
    assert [p.protocol for p in cfg.providers] == ["openai", "openai"]


def test_repr_hides_the_key() -> None:
    cfg = provider(api_key="sk-super-secret-1234")
    assert "sk-super-secret-1234" not in repr(cfg)
    assert "sk-super-secret-1234" not in str(cfg)
    assert "sk-super-secret-1234" not in repr(balancer(providers=[cfg]))


async def test_open_balancer_rejects_bad_keyword_fields() -> None:
    with pytest.raises(ConfigError, match="unknown"):
        async with llmlb.open_balancer(providers=[provider()], unknown=1):
            pass
    with pytest.raises(ConfigError, match="either"):
        async with llmlb.open_balancer(balancer(), strategy="failover"):
            pass
