"""Mistral chat completions: OpenAI's shapes with a few differences.

The differences (https://docs.mistral.ai/api/#tag/chat) are all
switches of `OpenAIAdapter`: ``max_tokens`` only, no ``stream_options`` (usage
comes on the last content chunk anyway), the ``model_length`` finish reason
and list-of-chunks content (both understood by the shared views), and FastAPI
style ``{"detail": ...}`` error bodies (understood by the shared error view).
"""

from __future__ import annotations

from typing import ClassVar

from .openai import OpenAIAdapter

__all__ = ["MistralAdapter"]


class MistralAdapter(OpenAIAdapter):
    """Mistral's ``POST {base}/chat/completions`` (``protocol="mistral"``)."""

    protocol: ClassVar[str] = "mistral"
    default_base_url: ClassVar[str] = "https://api.mistral.ai/v1"
    label: ClassVar[str] = "Mistral"
    uses_max_completion_tokens: ClassVar[bool] = False
    sends_stream_options: ClassVar[bool] = False
