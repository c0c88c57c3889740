"""Token estimates before sending: characters by default, tiktoken for OpenAI models."""

from __future__ import annotations

import logging

import pytest
import tiktoken

from llmlb_actors import LLMRequest, Message
from llmlb_actors.quota import (
    Cost,
    TiktokenEstimator,
    completion_reservation,
    default_estimator,
    estimate_chars,
    estimate_cost,
)


def test_character_estimate_counts_bytes_over_four_plus_framing() -> None:
    request = LLMRequest(prompt="x" * 400)
    assert estimate_chars(request) == 100 + 4 + 3
    chat = LLMRequest(
        system="s" * 40,
        messages=[Message(role="user", content="a" * 80), Message(role="assistant", content="b")],
    )
    assert estimate_chars(chat) == 31 + 4 * 3 + 3  # ceil(121 / 4) + 3 messages + reply


def test_character_estimate_over_estimates_other_scripts() -> None:
    japanese = LLMRequest(prompt="日本語のテキスト" * 10)  # 80 characters, 240 UTF-8 bytes
    assert estimate_chars(japanese) == 60 + 7


def test_completion_reservation() -> None:
    assert completion_reservation(LLMRequest(prompt="hi", max_tokens=50), 300) == 50
    assert completion_reservation(LLMRequest(prompt="hi"), 300) == 300
    assert completion_reservation(LLMRequest(prompt="hi"), None) == 0
    cost = estimate_cost(LLMRequest(prompt="abcd" * 10, max_tokens=5), "m", None)
    assert cost == Cost(10 + 7, 5)


def test_estimate_cost_refuses_a_broken_estimator() -> None:
    with pytest.raises(TypeError, match="estimator"):
        estimate_cost(LLMRequest(prompt="hi"), None, None, lambda request, model: -1)


def _byte_encoding(name: str) -> tiktoken.Encoding:
    # A byte-level encoding built here: no vocabulary download, every byte one token.
    return tiktoken.Encoding(
        name,
        pat_str=r"\S+|\s+",
        mergeable_ranks={bytes([i]): i for i in range(256)},
        special_tokens={},
    )


def test_tiktoken_for_openai_models_after_loading() -> None:
    loaded: list[str] = []

    def get_encoding(name: str) -> tiktoken.Encoding:
        loaded.append(name)
        return _byte_encoding(name)

    estimator = TiktokenEstimator(get_encoding)
    request = LLMRequest(prompt="hello world", system="be brief")
    assert estimator.encoding_name("gpt-4o-mini") == "o200k_base"
    assert estimator.encoding_name("claude-3-haiku") is None
    # Not loaded yet: the character estimate answers (a call never blocks on I/O).
    assert estimator(request, "gpt-4o-mini") == estimate_chars(request)
    assert estimator.needs_load("gpt-4o-mini")
    assert estimator.load("gpt-4o-mini")
    assert loaded == ["o200k_base"]
    assert not estimator.needs_load("gpt-4o-mini")
    assert estimator(request, "gpt-4o-mini") == 11 + 8 + 4 * 2 + 3  # bytes are tokens here
    # Other families keep the character estimate and are never loaded.
    assert not estimator.load("claude-3-haiku")
    assert estimator(request, "claude-3-haiku") == estimate_chars(request)


def test_tiktoken_load_failure_falls_back_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def offline(name: str) -> tiktoken.Encoding:
        raise ConnectionError("no network")

    estimator = TiktokenEstimator(offline)
    with caplog.at_level(logging.WARNING, logger="llmlb_actors.quota"):
        assert not estimator.load("gpt-4")
        assert not estimator.load("gpt-4")
    assert len([r for r in caplog.records if "tiktoken" in r.getMessage()]) == 1
    assert not estimator.needs_load("gpt-4")
    request = LLMRequest(prompt="hello")
    assert estimator(request, "gpt-4") == estimate_chars(request)


def test_default_estimator_uses_tiktoken_when_installed() -> None:
    assert isinstance(default_estimator(), TiktokenEstimator)
