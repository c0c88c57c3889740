"""The fixed streamed answers nginx serves: one 64-delta SSE body per wire protocol.

Rendered by the simulator's own protocol code (the shapes the adapters are
tested against), so the benchmark streams are the real wire shapes: OpenAI
``data:``-only chunks ending in ``data: [DONE]`` (with the usage chunk
``stream_options.include_usage`` asks for), Anthropic's typed ``event:`` +
``data:`` pairs ending in ``message_stop``, Gemini's whole responses per event
ending with the body. Each has ``STREAM_DELTAS`` text deltas.
"""

from __future__ import annotations

from typing import Final

from llmlb_actors.sim._protocols import make_protocol
from llmlb_actors.sim._protocols._base import ChatInput, Reply

__all__ = [
    "SSE_MODELS",
    "SSE_PATHS",
    "SSE_PROTOCOLS",
    "STREAM_DELTAS",
    "STREAM_TEXT",
    "nginx_string",
    "sse_body",
]

STREAM_DELTAS: Final = 64
#: 64 short words, one per delta, as a token stream looks. No ``$``, ``'`` or ``\``
#: (nginx would read them as variables or escapes).
_SENTENCE = (
    "Why did the scarecrow win an award? Because he was outstanding in his field, "
    "and the crows agreed that nobody had ever stood so still for so long "
    "in the rain, the wind and the sun, waiting for the harvest to come in "
    "while the farmer slept late every single morning of the long summer holidays, "
    "so the scarecrow kept the whole field safe and got a shiny medal for it."
)
STREAM_TEXT: Final = " ".join(_SENTENCE.split(" ")[:STREAM_DELTAS])

SSE_PROTOCOLS: Final = ("openai", "anthropic", "gemini")
SSE_MODELS: Final = {"openai": "gpt-sim", "anthropic": "claude-sim", "gemini": "gemini-sim"}
#: Where each body is served, below ``/sse/<protocol>`` (the provider's base URL): the
#: path each adapter posts a streamed request to.
SSE_PATHS: Final = {
    "openai": "/v1/chat/completions",
    "anthropic": "/v1/messages",
    "gemini": "/v1beta/models/gemini-sim:streamGenerateContent",
}


def sse_body(protocol: str) -> bytes:
    """The whole SSE body of one streamed answer in ``protocol``'s shape."""
    model = SSE_MODELS[protocol]
    wire = make_protocol(protocol, name="bench", model=model, api_key=None, created=1764115200)
    words = STREAM_TEXT.split()
    assert len(words) == STREAM_DELTAS, len(words)
    chat = ChatInput(
        model=model,
        stream=True,
        input_words=5,
        topic="Write a funny dad joke.",
        max_tokens=None,
        include_usage=True,
    )
    reply = Reply(
        id="bench-stream",
        model=model,
        text=STREAM_TEXT,
        chunks=STREAM_DELTAS,
        prompt_tokens=5,
        completion_tokens=len(words),
        truncated=False,
    )
    plan = wire.stream(reply, chat)
    assert len(plan.deltas) == STREAM_DELTAS
    return b"".join([*plan.head, *plan.deltas, *plan.tail])


def nginx_string(body: bytes) -> str:
    """``body`` as the inside of a single-quoted nginx string (``return 200 '...'``)."""
    text = body.decode()
    if "$" in text:
        raise ValueError("nginx would read '$' in a return body as a variable")
    return text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")
