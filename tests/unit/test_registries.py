"""The protocol and strategy registries are the one source of names: config
validation, inference, error messages and the CLI all follow them."""

from __future__ import annotations

import typing

import pytest

import llmlb_actors as llmlb
from llmlb_actors._config import STRATEGY_NAMES, StrategyName
from llmlb_actors.cli import build_parser
from llmlb_actors.providers._adapter import ProtocolAdapter, adapter_class
from llmlb_actors.providers._registry import PROTOCOLS, infer_protocol
from llmlb_actors.sim import SimProtocol
from llmlb_actors.strategies import STRATEGIES, StrategyOptions, make_strategy


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_every_protocol_loads_its_adapter(protocol: str) -> None:
    cls = adapter_class(protocol)
    assert issubclass(cls, ProtocolAdapter)
    assert cls.protocol == protocol


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_every_hint_infers_its_protocol(protocol: str) -> None:
    for hint in PROTOCOLS[protocol].hints:
        assert infer_protocol(hint) == protocol
        assert infer_protocol(f"{hint.upper()}-2") == protocol
        base_url = "https://res.example" if PROTOCOLS[protocol].needs_base_url else None
        config = llmlb.ProviderConfig(name=hint, model="m", api_key="k", base_url=base_url)
        assert config.protocol == protocol


def test_unknown_protocol_error_lists_every_protocol() -> None:
    with pytest.raises(llmlb.ConfigError) as info:
        llmlb.ProviderConfig(name="x", model="m", provider="nope")
    for protocol in PROTOCOLS:
        assert repr(protocol)[1:-1] in str(info.value)


def test_a_protocol_without_default_endpoint_needs_base_url() -> None:
    for protocol, spec in PROTOCOLS.items():
        if spec.needs_base_url:
            with pytest.raises(llmlb.ConfigError, match="base_url"):
                llmlb.ProviderConfig(name="x", model="m", provider=protocol)


def test_the_simulator_speaks_every_protocol() -> None:
    assert set(typing.get_args(SimProtocol)) == set(PROTOCOLS)


def test_every_strategy_name_has_a_factory() -> None:
    assert typing.get_args(StrategyName) == STRATEGY_NAMES
    assert set(STRATEGIES) == set(STRATEGY_NAMES)


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_make_strategy_builds_each_name(name: str) -> None:
    strategy = make_strategy(name, options=StrategyOptions(custom=lambda states: states[0]))
    assert strategy.name == name


def test_unknown_strategy_error_lists_every_strategy() -> None:
    with pytest.raises(llmlb.ConfigError) as info:
        llmlb.BalancerConfig(
            strategy="nope",  # type: ignore[arg-type]
            providers=[llmlb.ProviderConfig(name="openai", model="m", api_key="k")],
        )
    for name in STRATEGY_NAMES:
        assert name in str(info.value)
    with pytest.raises(llmlb.StrategyError, match="round-robin"):
        make_strategy("nope")


def test_custom_without_a_callable_is_refused() -> None:
    with pytest.raises(llmlb.StrategyError, match="custom_strategy"):
        make_strategy("custom")


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_cli_offers_every_strategy_a_file_can_name(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["demo", "--strategy", name]
    if name == "custom":  # needs a callable: no command line can give one
        with pytest.raises(SystemExit):
            build_parser().parse_args(argv)
        assert "invalid choice" in capsys.readouterr().err
    else:
        assert build_parser().parse_args(argv).strategy == name
