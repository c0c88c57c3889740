"""Mistral chat completions: OpenAI's shapes with a few differences.

The differences (https://docs.mistral.ai/api/#tag/chat) are all
switches of `OpenAIAdapter`: ``max_tokens`` only, no ``stream_options`` (usage
comes on the last content chunk anyway), the ``model_length`` finish reason
and list-of-chunks content (both understood by the shared views), FastAPI
style ``{"detail": ...}`` error bodies (understood by the shared error view),
``random_seed`` for the seed, and tool-call ids of exactly nine letters or
digits: an id from another provider is mapped to a stable nine-character one,
the same for the call and for the result that answers it.
"""

from __future__ import annotations

import re
from typing import ClassVar

from ._wire import safe_id
from .openai import OpenAIAdapter

__all__ = ["MistralAdapter"]

_MISTRAL_ID = re.compile(r"^[a-zA-Z0-9]{9}$")


class MistralAdapter(OpenAIAdapter):
    """Mistral's ``POST {base}/chat/completions`` (``protocol="mistral"``)."""

    protocol: ClassVar[str] = "mistral"
    default_base_url: ClassVar[str] = "https://api.mistral.ai/v1"
    label: ClassVar[str] = "Mistral"
    uses_max_completion_tokens: ClassVar[bool] = False
    sends_stream_options: ClassVar[bool] = False
    seed_field: ClassVar[str] = "random_seed"

    def tool_id(self, id: str) -> str:
        return safe_id(id, _MISTRAL_ID, 9)
