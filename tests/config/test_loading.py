"""`load_config`: TOML and JSON files, keys from the environment, one test per error kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

import llmlb_actors as llmlb
from llmlb_actors import BalancerConfig, ConfigError, ProviderConfig, load_config
from llmlb_actors._loading import _BalancerFile, _ProviderFile

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-test-LOADING-5b1f"


def write(tmp_path: Path, data: dict[str, Any], fmt: str) -> Path:
    """Write ``data`` as TOML (by hand, flat enough) or JSON."""
    path = tmp_path / f"config.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(data))
        return path
    lines = [f"{k} = {json.dumps(v)}" for k, v in data.items() if k != "providers"]
    for provider in data.get("providers", []):
        lines.append("[[providers]]")
        for k, v in provider.items():
            if isinstance(v, dict):
                inner = ", ".join(f"{ik} = {json.dumps(iv)}" for ik, iv in v.items())
                lines.append(f"{k} = {{ {inner} }}")
            else:
                lines.append(f"{k} = {json.dumps(v)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def base(**provider_two: Any) -> dict[str, Any]:
    two = {"name": "local", "provider": "openai-compatible", "base_url": "http://127.0.0.1:9/v1"}
    two.update({"model": "llama", "api_key_required": False}, **provider_two)
    return {
        "strategy": "weighted",
        "global_timeout": 5,
        "seed": 7,
        "providers": [
            {"name": "openai", "model": "gpt-4o-mini", "api_key_env": "LLMLB_TEST_KEY"},
            two,
        ],
    }


@pytest.fixture(params=["toml", "json"])
def fmt(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def load_err(path: Path, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, env={"LLMLB_TEST_KEY": KEY} if env is None else env)
    assert str(path) in str(info.value)
    assert KEY not in str(info.value)
    return info.value


def test_loads_both_formats(tmp_path: Path, fmt: str) -> None:
    data = base(weight=2, timeout=10, headers={"X-Team": "evals"}, max_concurrency=8)
    config = load_config(write(tmp_path, data, fmt), env={"LLMLB_TEST_KEY": KEY})
    assert isinstance(config, BalancerConfig)
    assert config.strategy == "weighted"
    assert config.global_timeout == 5.0
    assert config.seed == 7
    openai, local = config.providers
    assert openai == ProviderConfig(name="openai", model="gpt-4o-mini", api_key=KEY)
    assert local.weight == 2.0
    assert local.timeout == 10.0
    assert local.headers == {"X-Team": "evals"}
    assert local.max_concurrency == 8
    assert local.api_key is None
    # Unset fields keep the library defaults.
    assert config.max_retries == BalancerConfig(providers=[openai]).max_retries
    assert KEY not in repr(config) + repr(config.providers)


def test_reads_os_environ_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMLB_TEST_KEY", KEY)
    config = load_config(str(write(tmp_path, base(), "toml")))
    assert config.providers[0].api_key == KEY


def test_example_config_loads() -> None:
    env = {"OPENAI_API_KEY": "a", "ANTHROPIC_API_KEY": "b", "GEMINI_API_KEY": "c"}
    config = load_config(ROOT / "examples" / "config.toml", env=env)
    assert [p.name for p in config.providers] == ["openai", "claude", "gemini", "local-llama"]
    assert [p.api_key for p in config.providers] == ["a", "b", "c", None]


def test_missing_environment_variable(tmp_path: Path, fmt: str) -> None:
    err = load_err(write(tmp_path, base(), fmt), env={})
    assert err.field == "providers[0].api_key_env"
    assert "LLMLB_TEST_KEY" in str(err)
    assert "is not set" in str(err)


def test_empty_environment_variable(tmp_path: Path) -> None:
    err = load_err(write(tmp_path, base(), "toml"), env={"LLMLB_TEST_KEY": ""})
    assert "LLMLB_TEST_KEY is empty" in str(err)


def test_unknown_key_in_a_provider(tmp_path: Path, fmt: str) -> None:
    err = load_err(write(tmp_path, base(wieght=2), fmt))
    assert err.field == "providers[1].wieght"
    assert "unknown field 'wieght'" in str(err)
    assert "weight" in str(err).split("expected one of:")[1]


def test_unknown_top_level_key(tmp_path: Path, fmt: str) -> None:
    data = base()
    data["retries"] = 2
    err = load_err(write(tmp_path, data, fmt))
    assert err.field == "retries"
    assert "max_retries" in str(err)


def test_wrong_type(tmp_path: Path, fmt: str) -> None:
    err = load_err(write(tmp_path, base(weight="heavy"), fmt))
    assert err.field == "providers[1].weight"
    assert "expected float, got str" in str(err)


def test_wrong_type_at_top_level(tmp_path: Path, fmt: str) -> None:
    data = base()
    data["max_retries"] = 2.5
    err = load_err(write(tmp_path, data, fmt))
    assert err.field == "max_retries"
    assert "expected int" in str(err)


def test_bad_value(tmp_path: Path, fmt: str) -> None:
    err = load_err(write(tmp_path, base(weight=-1), fmt))
    assert err.field == "providers[1].weight"
    assert "must be a number > 0" in str(err)


def test_bad_top_level_value(tmp_path: Path, fmt: str) -> None:
    data = base()
    data["global_timeout"] = 0
    err = load_err(write(tmp_path, data, fmt))
    assert err.field == "global_timeout"
    assert "> 0" in str(err)


def test_unknown_choice(tmp_path: Path, fmt: str) -> None:
    data = base()
    data["strategy"] = "random"
    err = load_err(write(tmp_path, data, fmt))
    assert err.field == "strategy"
    assert "expected one of round-robin" in str(err)
    err = load_err(write(tmp_path, base(provider="llamacpp"), fmt))
    assert err.field == "providers[1].provider"


def test_missing_required_field(tmp_path: Path, fmt: str) -> None:
    data = base()
    del data["providers"][1]["name"]
    err = load_err(write(tmp_path, data, fmt))
    assert err.field == "providers[1].name"
    assert "required" in str(err)
    err = load_err(write(tmp_path, {"strategy": "failover"}, fmt))
    assert err.field == "providers"


def test_cross_field_rule(tmp_path: Path, fmt: str) -> None:
    data = base()
    data["providers"][1]["name"] = "openai"
    del data["providers"][1]["provider"]
    err = load_err(write(tmp_path, data, fmt))
    assert err.field == "providers[1].name"
    assert "used twice" in str(err)


def test_api_key_in_file_is_refused(tmp_path: Path, fmt: str) -> None:
    err = load_err(write(tmp_path, base(api_key=KEY), fmt))
    assert err.field == "providers[1].api_key"
    assert "api_key_env" in str(err)


def test_custom_strategy_in_file_is_refused(tmp_path: Path) -> None:
    data = base()
    data["custom_strategy"] = "mymodule.pick"
    err = load_err(write(tmp_path, data, "json"))
    assert err.field == "custom_strategy"


def test_syntax_errors(tmp_path: Path) -> None:
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text('strategy = "weighted\n')
    assert "invalid TOML" in str(load_err(bad_toml))
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"providers": [}\n')
    assert "invalid JSON" in str(load_err(bad_json))
    not_utf8 = tmp_path / "latin.toml"
    not_utf8.write_bytes(b'strategy = "\xe9"\n')
    assert "UTF-8" in str(load_err(not_utf8))
    not_a_table = tmp_path / "list.json"
    not_a_table.write_text("[1, 2]")
    assert "expected object" in str(load_err(not_a_table))


def test_missing_file_and_unsupported_type(tmp_path: Path) -> None:
    assert "cannot read" in str(load_err(tmp_path / "nope.toml"))
    yaml = tmp_path / "config.yaml"
    yaml.write_text("strategy: failover\n")
    assert "expected .toml or .json" in str(load_err(yaml))


def test_file_schema_covers_every_config_field() -> None:
    """A field added to the configs must be loadable from files too (or refused on purpose)."""
    balancer = set(BalancerConfig.__struct_fields__) - {
        "custom_strategy",
        "ssl_context",
        "quota_store",
    }
    assert set(_BalancerFile.__struct_fields__) == balancer
    provider = (set(ProviderConfig.__struct_fields__) - {"api_key"}) | {"api_key_env"}
    assert set(_ProviderFile.__struct_fields__) == provider


def test_round_trip_through_json(tmp_path: Path) -> None:
    """What a config holds (minus the key) written as JSON loads back equal."""
    config = load_config(write(tmp_path, base(weight=3), "toml"), env={"LLMLB_TEST_KEY": KEY})
    fields = msgspec.structs.asdict(config)
    providers = []
    for p in config.providers:
        item = {k: v for k, v in msgspec.structs.asdict(p).items() if v is not None}
        item.pop("api_key", None)
        if p.api_key is not None:
            item["api_key_env"] = "LLMLB_TEST_KEY"
        providers.append(item)
    fields["providers"] = providers
    del fields["custom_strategy"]
    del fields["ssl_context"]
    del fields["quota_store"]
    path = tmp_path / "again.json"
    path.write_text(json.dumps(fields))
    again = llmlb.load_config(path, env={"LLMLB_TEST_KEY": KEY})
    assert again == config


def test_proxy_and_trust_from_a_file(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not used before a TLS connection")
    path = tmp_path / "net.toml"
    path.write_text(
        f'proxy = "http://proxy.corp:3128"\ntrust_env = false\nca_bundle = "{ca}"\n'
        '[[providers]]\nname = "openai"\nmodel = "m"\nproxy = "http://other.corp:8080"\n'
        'api_key_env = "LLMLB_TEST_KEY"\n'
    )
    config = load_config(path, env={"LLMLB_TEST_KEY": KEY})
    assert (config.proxy, config.trust_env, config.ca_bundle) == (
        "http://proxy.corp:3128",
        False,
        str(ca),
    )
    assert config.providers[0].proxy == "http://other.corp:8080"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('proxy = "http://user:secret@proxy.corp:3128"\n', "proxy"),
        ('[[providers]]\nname = "openai"\nproxy = "http://u:secret@p:1"\n', "providers[0].proxy"),
        ('ssl_context = "system"\n', "ssl_context"),
    ],
)
def test_proxy_credentials_and_ssl_contexts_are_not_read_from_files(
    tmp_path: Path, text: str, field: str
) -> None:
    path = tmp_path / "net.toml"
    providers = "" if "[[providers]]" in text else '[[providers]]\nname = "openai"\nmodel = "m"\n'
    path.write_text(text + providers)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.field == field
    assert "secret" not in str(info.value)
