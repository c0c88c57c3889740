"""The ``--providers`` spec language of ``llmlb sim``, and the one simulated fleet every
command runs against when no ``--config`` is given. Strictly private.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..sim import OUTCOMES, Behaviour, SimProvider

__all__ = ["DEFAULT_SIM_SPEC", "default_fleet", "demo_fleet", "parse_providers", "quota_fleet"]

#: The default fleet: three protocols, so every command shows failover across APIs.
DEFAULT_SIM_SPEC = "alpha:openai,beta:anthropic,gamma:gemini"

_BEHAVIOUR_KEYS = {
    "latency": "latency",
    "jitter": "latency_jitter",
    "token_delay": "token_delay",
    "chunks": "chunks",
    "seed": "seed",
    "reply": "reply",
    "retry_after": "retry_after",
    "rpm": "rpm",
    "tpm": "tpm",
    "rpd": "rpd",
}
_PROVIDER_KEYS = {"model": "model", "key": "api_key", "port": "port"}
_INTS = {"chunks", "seed", "port", "rpm", "tpm", "rpd"}

SPEC_HELP = """\
SPEC is a comma-separated list of NAME[:PROTOCOL][:OPTION=VALUE...]. PROTOCOL is
openai (default), openai-compatible, anthropic, gemini, cohere or mistral.
OPTIONs: latency, jitter, token_delay (seconds), chunks, seed, reply, retry_after,
rpm, tpm, rpd (quotas: 429 past them, with the protocol's rate-limit headers),
model, key (the API key it demands; default: any), port, and any outcome name
with its probability per request, e.g. 503=0.1, 429=0.05, hang=0.01, reset=0.01."""


def parse_providers(spec: str, *, base_port: int = 0) -> list[SimProvider]:
    """Parse a ``--providers`` SPEC (see ``SPEC_HELP``).

    With ``base_port`` > 0, providers without their own ``port`` listen on
    consecutive ports from it.

    Raises:
        ValueError: a malformed entry, an unknown option or a bad value.
    """
    providers: list[SimProvider] = []
    for index, entry in enumerate(e.strip() for e in spec.split(",")):
        if not entry:
            raise ValueError(f"empty entry #{index + 1} in {spec!r}")
        name, *parts = entry.split(":")
        fields: dict[str, Any] = {"name": name}
        behaviour: dict[str, Any] = {}
        faults: dict[str, float] = {}
        if parts and "=" not in parts[0]:
            fields["protocol"] = parts.pop(0)
        for part in parts:
            key, sep, raw = part.partition("=")
            if not sep:
                raise ValueError(f"{name}: expected OPTION=VALUE, got {part!r}")
            try:
                if key in OUTCOMES:
                    faults[key] = float(raw)
                elif key in _BEHAVIOUR_KEYS:
                    behaviour[_BEHAVIOUR_KEYS[key]] = _value(key, raw)
                elif key in _PROVIDER_KEYS:
                    fields[_PROVIDER_KEYS[key]] = _value(key, raw)
                else:
                    known = ", ".join([*_BEHAVIOUR_KEYS, *_PROVIDER_KEYS, "<outcome>"])
                    raise ValueError(f"unknown option {key!r}; expected one of {known}")
            except ValueError as exc:
                raise ValueError(f"{name}: {key}: {exc}") from None
        if base_port and "port" not in fields:
            fields["port"] = base_port + index
        try:
            provider = SimProvider(**fields, behaviour=Behaviour(**behaviour, faults=faults))
        except (TypeError, ValueError) as exc:
            raise ValueError(str(exc)) from None
        providers.append(provider)
    names = [p.name for p in providers]
    if len(set(names)) != len(names):
        raise ValueError(f"provider names must be unique, got {', '.join(names)}")
    return providers


def _value(key: str, raw: str) -> Any:
    if key in _INTS:
        return int(raw)
    if key in ("reply", "model", "key"):
        return raw
    return float(raw)


def default_fleet() -> list[SimProvider]:
    """What every command runs against without ``--config`` (``llmlb sim``'s default too):
    zero latency and no faults, so ``bench`` measures the balancer's own cost."""
    return parse_providers(DEFAULT_SIM_SPEC)


def demo_fleet() -> list[SimProvider]:
    """The default fleet with small real latencies, and ``gamma`` flaky (503s, rare hangs)."""
    behaviours = {
        "alpha": Behaviour(latency=0.005, latency_jitter=0.010, seed=1),
        "beta": Behaviour(latency=0.010, latency_jitter=0.020, seed=2),
        "gamma": Behaviour(
            latency=0.005, latency_jitter=0.025, faults={"503": 0.12, "hang": 0.02}, seed=3
        ),
    }
    return [msgspec.structs.replace(p, behaviour=behaviours[p.name]) for p in default_fleet()]


def quota_fleet() -> list[SimProvider]:
    """Three providers with quotas (pooled 1,500 rpm) for ``llmlb demo --scenario quota``."""
    return [
        SimProvider(
            name="alpha",
            protocol="openai",
            behaviour=Behaviour(latency=0.05, latency_jitter=0.05, rpm=600, seed=1),
        ),
        SimProvider(
            name="beta",
            protocol="anthropic",
            behaviour=Behaviour(latency=0.05, latency_jitter=0.05, rpm=600, seed=2),
        ),
        SimProvider(
            name="gamma",
            protocol="openai",
            behaviour=Behaviour(latency=0.05, latency_jitter=0.05, rpm=300, seed=3),
        ),
    ]
