"""What a simulated provider does: latency, streaming pace, replies and faults.

Everything here is pure data plus one pure choice function, so the server can
stay a thin shell and tests can predict every outcome from a seed.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final, Literal, get_args

import msgspec

if TYPE_CHECKING:
    from collections import deque
    from random import Random

__all__ = [
    "HTTP_ERROR_OUTCOMES",
    "OUTCOMES",
    "Behaviour",
    "SimProtocol",
    "SimProvider",
    "check_outcome",
    "choose_outcome",
]

SimProtocol = Literal[
    "openai", "openai-compatible", "anthropic", "gemini", "cohere", "mistral", "azure"
]
_PROTOCOLS: Final = get_args(SimProtocol)

HTTP_ERROR_OUTCOMES: Final = frozenset(
    {"400", "401", "403", "404", "408", "409", "422", "429", "500", "502", "503", "504", "529"}
)
"""Outcomes answered with that HTTP status and the protocol's own error body."""

OUTCOMES: Final[tuple[str, ...]] = (
    "ok",
    *sorted(HTTP_ERROR_OUTCOMES),
    "hang",
    "reset",
    "malformed",
    "wrong_shape",
    "cut",
    "stall",
    "slow",
    "redirect",
    "stream_error",
)
"""Every outcome name accepted by ``Simulator.script`` and ``Behaviour.faults``.

======================  ===========================================================
outcome                 what the client sees
======================  ===========================================================
``ok``                  a normal answer (whole or streamed)
``"400"`` ... ``"529"`` that status with the protocol's error body and headers
``hang``                the request is read and never answered
``reset``               the connection is closed with a TCP RST, no answer
``malformed``           200 whose body (or one stream event) is not JSON
``wrong_shape``         200 with valid JSON of the wrong shape
``cut``                 whole: fewer bytes than Content-Length, then close;
                        stream: half the deltas, then close without the end
``stall``               half the answer, then silence on an open connection
``slow``                stream: 10x ``token_delay``; whole: 10x the latency
``redirect``            307 to a loopback port where nothing answers
``stream_error``        stream: half the deltas, then the protocol's in-stream
                        error event; whole: behaves as ``"500"``
======================  ===========================================================
"""

_OUTCOME_SET: Final = frozenset(OUTCOMES)


def check_outcome(name: object) -> str:
    """Return ``name`` if it is a known outcome, else raise ``ValueError``."""
    if not isinstance(name, str) or name not in _OUTCOME_SET:
        raise ValueError(
            f"unknown simulator outcome {name!r}; expected one of {', '.join(OUTCOMES)}"
        )
    return name


def _check_non_negative(field: str, value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or math.isnan(value)
        or math.isinf(value)
        or value < 0
    ):
        raise ValueError(f"Behaviour.{field} must be a finite number >= 0, got {value!r}")


class Behaviour(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How one simulated provider answers.

    ==================  ========  ======================================================
    field               default   meaning
    ==================  ========  ======================================================
    latency             0.0 s     wait before answering (any outcome but ``hang``)
    latency_jitter      0.0 s     uniform extra wait in ``[0, jitter]`` (seeded)
    token_delay         0.0 s     wait between two text deltas of a stream
    chunks              8         text deltas per stream (fewer if the reply is shorter)
    reply               None      fixed reply text; default: derived from the prompt
    faults              {}        outcome name -> probability per request (sum <= 1)
    retry_after         1.0 s     Retry-After of scripted 429s (and ``retry-after-ms``,
                                  RetryInfo)
    seed                0         seeds the provider's ``random.Random``
    rpm                 None      quota: at most ``ceil(rpm / 60)`` requests in any
                                  rolling 1-second window
    tpm                 None      quota: a bucket of ``tpm`` tokens refilling ``tpm / 60``
                                  per second, charged prompt + reply on arrival
    rpd                 None      quota: requests per day (from the first request)
    ==================  ========  ======================================================

    Token counts are words: prompt tokens are the words of every message
    (system included), completion tokens the words of the reply, so a client
    can check exact usage numbers. A request over a quota is answered at once
    with the protocol's own 429: OpenAI-style ``x-ratelimit-*`` headers (Go
    durations) and Anthropic's ``anthropic-ratelimit-*`` (RFC 3339) on every
    answer of a provider with quotas, ``retry-after`` (and ``retry-after-ms``
    where the API sends it) on the 429, Gemini's ``QuotaFailure`` and
    ``RetryInfo`` in its body. See ``llmlb_actors.sim._quota`` for the exact rules.
    """

    latency: float = 0.0
    latency_jitter: float = 0.0
    token_delay: float = 0.0
    chunks: int = 8
    reply: str | None = None
    faults: dict[str, float] = msgspec.field(default_factory=dict)
    retry_after: float = 1.0
    seed: int = 0
    rpm: int | None = None
    tpm: int | None = None
    rpd: int | None = None

    def __post_init__(self) -> None:
        for field in ("latency", "latency_jitter", "token_delay", "retry_after"):
            _check_non_negative(field, getattr(self, field))
        if isinstance(self.chunks, bool) or not isinstance(self.chunks, int) or self.chunks < 1:
            raise ValueError(f"Behaviour.chunks must be an integer >= 1, got {self.chunks!r}")
        if self.reply is not None and not isinstance(self.reply, str):
            raise ValueError("Behaviour.reply must be a string or None")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"Behaviour.seed must be an integer, got {self.seed!r}")
        for quota in ("rpm", "tpm", "rpd"):
            value = getattr(self, quota)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(f"Behaviour.{quota} must be a positive integer, got {value!r}")
        if not isinstance(self.faults, dict):
            raise ValueError("Behaviour.faults must map outcome names to probabilities")
        total = 0.0
        for name, probability in self.faults.items():
            check_outcome(name)
            _check_non_negative(f"faults[{name!r}]", probability)
            total += probability
        if total > 1.0 + 1e-9:
            raise ValueError(f"Behaviour.faults probabilities sum to {total:g}, more than 1")

    @property
    def quotas(self) -> tuple[int | None, int | None, int | None]:
        """``(rpm, tpm, rpd)``."""
        return (self.rpm, self.tpm, self.rpd)


_DEFAULT_MODELS: Final = {
    "openai": "gpt-sim",
    "openai-compatible": "sim-model",
    "anthropic": "claude-sim",
    "gemini": "gemini-sim",
    "cohere": "command-sim",
    "mistral": "mistral-sim",
    "azure": "gpt-sim-deployment",
}


class SimProvider(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One simulated provider, served on its own loopback port.

    Attributes:
        name: unique id within a simulator.
        protocol: the wire protocol it speaks.
        api_key: when set, requests must carry it (wrong or missing: the
            protocol's auth error); when ``None`` any key is accepted.
        model: the one model it serves (default depends on the protocol);
            requests naming another model get the protocol's answer (a 404;
            Mistral: a 400 ``invalid_model``, as its API does).
        behaviour: latency, streaming pace and faults.
        port: port to listen on; 0 picks a free one.
    """

    name: str
    protocol: SimProtocol = "openai"
    api_key: str | None = None
    model: str | None = None
    behaviour: Behaviour = msgspec.field(default_factory=Behaviour)
    port: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError("SimProvider.name must be a non-empty string")
        if self.protocol not in _PROTOCOLS:
            raise ValueError(
                f"SimProvider {self.name!r}: unknown protocol {self.protocol!r}; "
                f"expected one of {', '.join(_PROTOCOLS)}"
            )
        if self.api_key is not None and not isinstance(self.api_key, str):
            raise ValueError(f"SimProvider {self.name!r}: api_key must be a string or None")
        if self.model is not None and (not isinstance(self.model, str) or not self.model):
            raise ValueError(f"SimProvider {self.name!r}: model must be a non-empty string")
        if not isinstance(self.behaviour, Behaviour):
            raise ValueError(f"SimProvider {self.name!r}: behaviour must be a Behaviour")
        if (
            isinstance(self.port, bool)
            or not isinstance(self.port, int)
            or not (0 <= self.port <= 65535)
        ):
            raise ValueError(f"SimProvider {self.name!r}: port must be in 0..65535")

    @property
    def model_id(self) -> str:
        """The served model: ``model`` or the protocol's default."""
        return self.model if self.model is not None else _DEFAULT_MODELS[self.protocol]

    def __repr__(self) -> str:
        # The key is a secret even when simulated: tests copy real-looking keys around.
        key = "None" if self.api_key is None else "'***'"
        return (
            f"SimProvider(name={self.name!r}, protocol={self.protocol!r}, api_key={key}, "
            f"model={self.model_id!r}, port={self.port!r})"
        )


def choose_outcome(behaviour: Behaviour, script: deque[str], rng: Random) -> str:
    """The next outcome: the head of the script, else a seeded draw from ``faults``.

    The random generator is consulted only when the script is empty and faults
    are configured, so adding a script never shifts the random sequence of a
    run that has none.
    """
    if script:
        return script.popleft()
    faults = behaviour.faults
    if faults:
        draw = rng.random()
        acc = 0.0
        for name, probability in faults.items():
            acc += probability
            if draw < acc:
                return name
    return "ok"
