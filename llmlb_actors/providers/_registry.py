"""The protocol registry: every built-in wire protocol, by name, in one table.

Config validation, name inference and error messages read `PROTOCOLS`; the
balancer loads adapters through `_adapter.adapter_class`. Adding a protocol is
one entry here (plus its adapter module). Adapters are named as
``"module:Class"`` and imported on first use: the config must not import them
(they name `ProviderConfig`), and a balancer loads only the protocols it uses.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["PROTOCOLS", "ProtocolSpec", "infer_protocol"]


class ProtocolSpec(NamedTuple):
    """One built-in protocol."""

    adapter: str
    """``"module:Class"`` of its `ProtocolAdapter`, relative to ``llmlb_actors.providers``."""
    hints: tuple[str, ...] = ()
    """Provider names that imply this protocol (``"claude"``, ``"claude-eu"``, ...)."""
    needs_base_url: bool = False
    """No default endpoint: ``ProviderConfig.base_url`` is required."""


PROTOCOLS: dict[str, ProtocolSpec] = {
    "openai": ProtocolSpec("openai:OpenAIAdapter", hints=("openai",)),
    "anthropic": ProtocolSpec("anthropic:AnthropicAdapter", hints=("anthropic", "claude")),
    "gemini": ProtocolSpec("gemini:GeminiAdapter", hints=("gemini", "google")),
    "cohere": ProtocolSpec("cohere:CohereAdapter", hints=("cohere",)),
    "mistral": ProtocolSpec("mistral:MistralAdapter", hints=("mistral",)),
    "openai-compatible": ProtocolSpec("openai:OpenAICompatibleAdapter", needs_base_url=True),
    "azure": ProtocolSpec("azure:AzureOpenAIAdapter", hints=("azure",), needs_base_url=True),
}

_SEPARATOR = re.compile(r"[-_.:/0-9]")


def infer_protocol(name: str) -> str | None:
    """The wire protocol a provider name implies, or ``None``.

    ``"openai"``, ``"claude"``, ``"gemini-eu"`` and ``"mistral_2"`` imply a
    protocol; ``"my-llm"`` does not.
    """
    low = name.lower()
    for protocol, spec in PROTOCOLS.items():
        for hint in spec.hints:
            if low == hint or (low.startswith(hint) and _SEPARATOR.match(low, len(hint))):
                return protocol
    return None
