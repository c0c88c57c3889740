"""Protocol name → adapter class."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._base import ProtocolAdapter

__all__ = ["adapter_class"]


def adapter_class(protocol: str) -> type[ProtocolAdapter]:
    """The adapter class for a built-in protocol name (already validated by the config)."""
    if protocol == "openai":
        from .openai import OpenAIAdapter

        return OpenAIAdapter
    if protocol == "openai-compatible":
        from .openai import OpenAICompatibleAdapter

        return OpenAICompatibleAdapter
    if protocol == "mistral":
        from .mistral import MistralAdapter

        return MistralAdapter
    if protocol == "anthropic":
        from .anthropic import AnthropicAdapter

        return AnthropicAdapter
    if protocol == "gemini":
        from .gemini import GeminiAdapter

        return GeminiAdapter
    if protocol == "azure":
        from .azure import AzureOpenAIAdapter

        return AzureOpenAIAdapter
    if protocol == "cohere":
        from .cohere import CohereAdapter

        return CohereAdapter
    raise KeyError(protocol)
