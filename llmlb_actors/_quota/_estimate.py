"""Token estimates made before a request is sent: what a token budget reserves.

The default estimate is character-based and costs a microsecond: UTF-8 bytes
divided by four (OpenAI's rule of thumb for English; counting bytes rather
than characters keeps it an over-estimate for most other scripts), plus the
per-message framing OpenAI's cookbook counts. With ``tiktoken`` installed (the
``tokens`` extra) OpenAI-family models get their real encoding. Either way the
reservation is reconciled with the provider's own ``usage`` when the attempt
ends, so an estimate only has to be close, not exact.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from ._types import Cost

if TYPE_CHECKING:
    from .._models import LLMRequest

__all__ = [
    "TiktokenEstimator",
    "TokenEstimator",
    "completion_reservation",
    "default_estimator",
    "estimate_chars",
    "estimate_cost",
    "request_texts",
]

log = logging.getLogger("llmlb_actors.quota")

TokenEstimator = Callable[["LLMRequest", "str | None"], int]
"""``estimator(request, model) -> prompt tokens``: how many tokens a request's input is."""

#: Tokens of framing per message and for the reply's priming (OpenAI's cookbook count
#: for chat models: ``<|start|>role ... <|end|>`` per message, 3 for the reply).
PER_MESSAGE: Final = 4
PER_REPLY: Final = 3


def request_texts(request: LLMRequest) -> list[str]:
    """Every text of a request's input: system prompt, prompt or message contents."""
    texts: list[str] = []
    if request.system:
        texts.append(request.system)
    if request.prompt is not None:
        texts.append(request.prompt)
    for message in request.messages or ():
        content: Any = message.content
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list | tuple):  # content parts (text, images)
            texts.extend(t for t in (getattr(p, "text", None) for p in content) if t)
    return texts


def _messages(request: LLMRequest) -> int:
    count = len(request.messages) if request.messages is not None else 1
    return count + (1 if request.system else 0)


def _utf8_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def estimate_chars(request: LLMRequest, model: str | None = None) -> int:
    """Prompt tokens from the input's size: ``ceil(utf8_bytes / 4)`` plus message framing."""
    size = sum(_utf8_length(text) for text in request_texts(request))
    return math.ceil(size / 4) + PER_MESSAGE * _messages(request) + PER_REPLY


class TiktokenEstimator:
    """Real token counts for OpenAI-family models via ``tiktoken``; characters for the rest.

    Loading an encoding reads (the first time: downloads) its vocabulary and
    takes a fraction of a second, so it never happens inside a call: `load`
    runs once per model in a worker thread, and until it has, the character
    estimate answers. ``get_encoding`` is ``tiktoken.get_encoding`` unless
    given (tests build an encoding locally, without the network).
    """

    def __init__(self, get_encoding: Callable[[str], Any] | None = None) -> None:
        if importlib.util.find_spec("tiktoken") is None:
            raise ImportError("tiktoken is not installed: pip install 'llmlb-actors[tokens]'")
        # tiktoken itself is imported on first use: a balancer whose providers have no
        # token budget never pays for it (nor keeps its objects alive for the collector).
        self._get_encoding = get_encoding
        self._encodings: dict[str, Any] = {}  # model -> encoding
        self._failed: set[str] = set()

    def encoding_name(self, model: str | None) -> str | None:
        """The encoding tiktoken knows for ``model`` (no I/O), or ``None``."""
        if not model:
            return None
        import tiktoken.model

        try:
            return str(tiktoken.model.encoding_name_for_model(model))
        except KeyError:
            return None

    def needs_load(self, model: str | None) -> bool:
        return (
            model is not None
            and model not in self._encodings
            and model not in self._failed
            and self.encoding_name(model) is not None
        )

    def load(self, model: str | None) -> bool:
        """Load ``model``'s encoding (blocking: call it in a thread); False if it cannot be."""
        name = self.encoding_name(model)
        if model is None or name is None:
            return False
        if model in self._encodings:
            return True
        try:
            if self._get_encoding is None:
                import tiktoken

                self._get_encoding = tiktoken.get_encoding
            self._encodings[model] = self._get_encoding(name)
        except Exception as exc:  # offline, a broken cache: the character estimate will do
            if model not in self._failed:
                log.warning(
                    "tiktoken could not load %s for %s (%s); estimating tokens from characters",
                    name,
                    model,
                    type(exc).__name__,
                )
            self._failed.add(model)
            return False
        return True

    def __call__(self, request: LLMRequest, model: str | None = None) -> int:
        encoding = self._encodings.get(model) if model is not None else None
        if encoding is None:
            return estimate_chars(request, model)
        tokens = sum(
            len(encoding.encode(text, disallowed_special=())) for text in request_texts(request)
        )
        return tokens + PER_MESSAGE * _messages(request) + PER_REPLY


def default_estimator() -> TokenEstimator:
    """`TiktokenEstimator` when ``tiktoken`` is installed, else `estimate_chars`."""
    try:
        return TiktokenEstimator()
    except ImportError:
        return estimate_chars


def completion_reservation(request: LLMRequest, default_max_tokens: int | None) -> int:
    """Completion tokens to reserve: ``max_tokens``, else the provider's ``default_max_tokens``.

    With neither, nothing is reserved: the completion is charged when its usage is known.
    """
    if request.max_tokens is not None:
        return request.max_tokens
    return default_max_tokens or 0


def estimate_cost(
    request: LLMRequest,
    model: str | None,
    default_max_tokens: int | None,
    estimator: TokenEstimator = estimate_chars,
) -> Cost:
    """The `Cost` one attempt of ``request`` reserves at a provider serving ``model``."""
    prompt = estimator(request, model)
    if isinstance(prompt, bool) or not isinstance(prompt, int) or prompt < 0:
        raise TypeError(f"token estimator returned {prompt!r}, not a non-negative int")
    return Cost(prompt, completion_reservation(request, default_max_tokens))
