"""One module per simulated wire protocol, and the lookup by protocol name."""

from __future__ import annotations

from typing import Final

from ._base import WireProtocol
from .anthropic import AnthropicProtocol
from .cohere import CohereProtocol
from .gemini import GeminiProtocol
from .mistral import MistralProtocol
from .openai import AzureOpenAIProtocol, OpenAICompatibleProtocol, OpenAIProtocol

__all__ = ["PROTOCOLS", "WireProtocol", "make_protocol"]

PROTOCOLS: Final[dict[str, type[WireProtocol]]] = {
    "openai": OpenAIProtocol,
    "openai-compatible": OpenAICompatibleProtocol,
    "anthropic": AnthropicProtocol,
    "gemini": GeminiProtocol,
    "cohere": CohereProtocol,
    "mistral": MistralProtocol,
    "azure": AzureOpenAIProtocol,
}


def make_protocol(
    protocol: str, *, name: str, model: str, api_key: str | None, created: int
) -> WireProtocol:
    """The protocol implementation for one simulated provider."""
    return PROTOCOLS[protocol](name=name, model=model, api_key=api_key, created=created)
