"""Text-only requests build exactly the bytes they built before tools, images and the rest.

The golden file was written by the adapters as they were before the chat
surface grew (``python tests/unit/providers/test_pinned_text_bodies.py``
rewrites it: do that only for a deliberate change of a wire body). Every
protocol, whole and streamed, for plain prompts, conversations with every role,
sampling options and awkward text: method, URL, headers (keys masked) and body
bytes must match byte for byte.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from llmlb_actors._config import ProviderConfig
from llmlb_actors._models import LLMRequest, Message
from llmlb_actors.providers._adapter import adapter_class

GOLDEN = Path(__file__).with_name("pinned_text_bodies.json")
KEY = "sk-pinned-KEY"

PROTOCOLS: dict[str, dict[str, Any]] = {
    "openai": {"model": "gpt-4o-mini"},
    "openai-compatible": {"model": "llama", "base_url": "http://127.0.0.1:8000/v1"},
    "mistral": {"model": "mistral-small-latest"},
    "anthropic": {"model": "claude-x"},
    "anthropic-versioned": {"model": "claude-x", "api_version": "2026-10-21"},
    "gemini": {"model": "gemini-2.5-flash"},
    "gemini-v1": {"model": "models/gemini-2.5-flash", "api_version": "v1"},
    "cohere": {"model": "command-r"},
}


def _requests() -> dict[str, LLMRequest]:
    return {
        "prompt": LLMRequest(prompt="Write a funny dad joke."),
        "prompt-options": LLMRequest(
            prompt="Hi",
            system="Be brief.",
            max_tokens=64,
            temperature=0.2,
            top_p=0.9,
            stop="END",
        ),
        "int-temperature": LLMRequest(prompt="Hi", temperature=1, top_p=1, max_tokens=1),
        "zero-temperature": LLMRequest(prompt="Hi", temperature=0.0),
        "conversation": LLMRequest(
            messages=[
                Message(role="system", content="You are terse."),
                Message(role="user", content="Hello"),
                Message(role="assistant", content="Hi."),
                Message(role="user", content="Tell me more"),
            ],
            stop=["\n\n", "END"],
        ),
        "conversation-dicts": LLMRequest(
            messages=[
                {"role": "user", "content": "one"},
                {"role": "assistant", "content": "two"},
                {"role": "user", "content": "three"},
            ],
            system="sys",
            max_tokens=5,
        ),
        "awkward-text": LLMRequest(
            prompt='quote " backslash \\ newline \n tab \t emoji 🎉 nul-free \u2028 é',
            system="système\r\n",
        ),
        "empty-prompt": LLMRequest(prompt=""),
        "with-id": LLMRequest(prompt="x", id="req-1", stream=True),
    }


def _config(protocol: str) -> ProviderConfig:
    fields = dict(PROTOCOLS[protocol])
    return ProviderConfig(
        name="pinned",
        provider=protocol.split("-versioned")[0].split("-v1")[0],
        api_key=KEY,
        **fields,
    )


def _snapshot() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for protocol in PROTOCOLS:
        config = _config(protocol)
        adapter = adapter_class(str(config.protocol))(config)
        for case, request in _requests().items():
            for stream in (False, True):
                call = adapter.build_request(request, stream=stream)
                assert call.body is not None
                out[f"{protocol}/{case}/{'stream' if stream else 'whole'}"] = {
                    "method": call.method,
                    "url": call.url,
                    "headers": [[k, str(v).replace(KEY, "<KEY>")] for k, v in call.headers],
                    "body": call.body.decode("utf-8"),
                }
    return out


def _golden() -> dict[str, Any]:
    if not GOLDEN.exists():
        return {}
    data: dict[str, Any] = json.loads(GOLDEN.read_text(encoding="utf-8"))
    return data


@pytest.mark.parametrize("key", sorted(_golden()))
def test_text_only_request_is_byte_identical_to_the_pinned_one(key: str) -> None:
    assert _snapshot()[key] == _golden()[key]


def test_every_pinned_case_is_still_built() -> None:
    assert sorted(_snapshot()) == sorted(_golden())


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps(_snapshot(), indent=1, ensure_ascii=False) + "\n", "utf-8")
    sys.exit(0)
