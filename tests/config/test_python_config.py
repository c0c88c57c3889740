"""Config built in Python is as helpful as config files: unknown fields list the valid
ones, ``api_key_env`` works on ``ProviderConfig``, and a missing key is caught before
anything starts, with an explicit opt-out for servers that take none."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
import pytest

import llmlb_actors as llmlb
from llmlb_actors.sim import SimProvider, open_simulator

if TYPE_CHECKING:
    from pathlib import Path

SECRET = "sk-python-config-SECRET-4d2e"


def test_an_unknown_provider_field_lists_the_valid_ones() -> None:
    with pytest.raises(llmlb.ConfigError) as info:
        llmlb.ProviderConfig(name="openai", modle="gpt-4o-mini", api_key="k")  # type: ignore[call-arg]
    message = str(info.value)
    assert info.value.field == "modle"
    assert "unknown field 'modle'" in message
    assert "did you mean 'model'?" in message
    for field in ("name", "model", "api_key", "api_key_env", "base_url", "weight"):
        assert field in message


def test_an_unknown_balancer_field_lists_the_valid_ones() -> None:
    provider = llmlb.ProviderConfig(name="openai", model="m", api_key="k")
    with pytest.raises(llmlb.ConfigError) as info:
        llmlb.BalancerConfig(providers=[provider], stratgy="failover")  # type: ignore[call-arg]
    assert "unknown field 'stratgy' (did you mean 'strategy'?)" in str(info.value)
    assert "request_timeout" in str(info.value)


async def test_open_balancer_keywords_too() -> None:
    provider = llmlb.ProviderConfig(name="openai", model="m", api_key="k")
    with pytest.raises(llmlb.ConfigError, match="unknown field 'retries'"):
        async with llmlb.open_balancer(providers=[provider], retries=2):
            pass


def test_a_missing_required_field_is_named() -> None:
    with pytest.raises(llmlb.ConfigError, match="'name' is required"):
        llmlb.ProviderConfig(model="m", api_key="k")  # type: ignore[call-arg]


def test_a_protocol_that_needs_a_key_and_gets_none_is_refused_at_construction() -> None:
    for protocol in ("openai", "anthropic", "gemini", "cohere", "mistral"):
        with pytest.raises(llmlb.ConfigError) as info:
            llmlb.ProviderConfig(name=protocol, model="m")
        assert info.value.field == "api_key"
        message = str(info.value)
        assert "api_key_env" in message
        assert "api_key_required=False" in message
    with pytest.raises(llmlb.ConfigError, match="api_key"):
        llmlb.ProviderConfig(
            name="groq", provider="openai-compatible", base_url="https://x.test/v1", model="m"
        )


def test_keyless_servers_opt_out_explicitly() -> None:
    local = llmlb.ProviderConfig(
        name="local-vllm",
        provider="openai-compatible",
        base_url="http://127.0.0.1:8000/v1",
        model="llama",
        api_key_required=False,
    )
    assert local.api_key is None

    class Mine(llmlb.BaseProvider):
        pass

    # A provider class of your own handles its own credentials.
    assert llmlb.ProviderConfig(name="mine", provider=Mine).api_key is None


def test_api_key_and_api_key_env_together_are_refused() -> None:
    with pytest.raises(llmlb.ConfigError, match="not both"):
        llmlb.ProviderConfig(name="openai", model="m", api_key="k", api_key_env="OPENAI_API_KEY")


async def test_api_key_env_is_read_when_the_balancer_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    guarded = SimProvider(name="guarded", protocol="openai", api_key=SECRET)
    async with open_simulator([guarded]) as sim:
        config = sim.provider_config("guarded", api_key=None, api_key_env="LLMLB_PY_KEY")
        assert config.api_key is None
        assert "LLMLB_PY_KEY" in repr(config)

        monkeypatch.delenv("LLMLB_PY_KEY", raising=False)
        with pytest.raises(llmlb.ConfigError) as info:
            async with llmlb.open_balancer(providers=[config]):
                pass
        assert info.value.field == "providers[0].api_key_env"
        assert "LLMLB_PY_KEY is not set" in str(info.value)
        assert sim.stats("guarded").requests == 0

        monkeypatch.setenv("LLMLB_PY_KEY", SECRET)
        async with llmlb.open_balancer(providers=[config]) as lb:
            response = await lb.request(llmlb.LLMRequest(prompt="hi"))
            assert response.provider == "guarded"  # the simulator accepted the key
            assert SECRET not in repr(lb.config) + repr(lb.get_stats())
            await lb.add_provider(msgspec.structs.replace(config, name="again"))
            assert (await lb.request(llmlb.LLMRequest(prompt="hi"))).provider
        monkeypatch.delenv("LLMLB_PY_KEY")
        async with llmlb.open_balancer(providers=[sim.provider_config("guarded")]) as lb:
            with pytest.raises(llmlb.ConfigError, match="LLMLB_PY_KEY is not set"):
                await lb.add_provider(msgspec.structs.replace(config, name="late"))


def test_a_file_can_declare_a_keyless_server(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        "[[providers]]\n"
        'name = "local"\n'
        'provider = "openai-compatible"\n'
        'base_url = "http://127.0.0.1:8000/v1"\n'
        'model = "llama"\n'
        "api_key_required = false\n"
    )
    (provider,) = llmlb.load_config(path).providers
    assert provider.api_key is None
    path.write_text(path.read_text().replace("api_key_required = false\n", ""))
    with pytest.raises(llmlb.ConfigError) as info:
        llmlb.load_config(path)
    assert info.value.field == "providers[0].api_key"
