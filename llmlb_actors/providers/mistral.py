"""Mistral chat completions: OpenAI's shapes with a few differences.

The differences (https://docs.mistral.ai/api/#tag/chat) are all
switches of `OpenAIAdapter`: ``max_tokens`` only, no ``stream_options`` (usage
comes on the last content chunk anyway), the ``model_length`` finish reason
and list-of-chunks content (both understood by the shared views), FastAPI
style ``{"detail": ...}`` error bodies (understood by the shared error view),
an unknown model answered with a 400 ``invalid_model`` (a refusal here),
``random_seed`` for the seed, and tool-call ids of exactly nine letters or
digits: an id from another provider is mapped to a stable nine-character one,
the same for the call and for the result that answers it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, ClassVar

import msgspec

from ._wire import safe_id, try_decode
from .openai import OpenAIAdapter

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .._errors import LLMError

__all__ = ["MistralAdapter"]

_MISTRAL_ID = re.compile(r"^[a-zA-Z0-9]{9}$")


class _ErrorType(msgspec.Struct):
    """The ``type`` of Mistral's ``{"object": "error", ...}`` body."""

    type: str | None = None


_ERROR_TYPE = msgspec.json.Decoder(_ErrorType)


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

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> LLMError:
        """Mistral answers an unknown model with a 400 ``invalid_model``, where the other
        APIs answer a 404: a refusal all the same (the provider leaves rotation and a
        batch stops), not a bad request to fail one prompt at a time."""
        error = super().parse_error(status, headers, body)
        if status == 400:
            view = try_decode(_ERROR_TYPE, body)
            if view is not None and view.type == "invalid_model":
                error.disables_provider = True
        return error
