from __future__ import annotations

import re
from typing import Any

import pytest

from llmlb_actors import LLMRequest, Message


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "prompt"),
        ({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": "a", "temperature": 2.5}, "temperature"),
        ({"prompt": "a", "temperature": -0.1}, "temperature"),
        ({"prompt": "a", "temperature": "hot"}, "temperature"),
        ({"prompt": "a", "top_p": 0}, "top_p"),
        ({"prompt": "a", "top_p": 1.01}, "top_p"),
        ({"prompt": "a", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "a", "max_tokens": -5}, "max_tokens"),
        ({"prompt": "a", "max_tokens": 1.5}, "max_tokens"),
        ({"prompt": "a", "max_tokens": True}, "max_tokens"),
        ({"prompt": "a", "stop": 3}, "stop"),
        ({"prompt": "a", "stop": [""]}, "stop"),
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0]"),
        ({"messages": [{"role": "user"}]}, "messages[0]"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages"),
    ],
)
def test_bad_requests_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"LLMRequest.{field}")):
        LLMRequest(**kwargs)


def test_messages_accept_dicts_and_structs() -> None:
    req = LLMRequest(
        messages=[{"role": "user", "content": "a"}, Message(role="assistant", content="b")]
    )
    assert req.messages == (
        Message(role="user", content="a"),
        Message(role="assistant", content="b"),
    )


def test_prompt_becomes_one_user_turn_and_stop_a_tuple() -> None:
    req = LLMRequest(prompt="hi", stop="END", temperature=0, top_p=1)
    assert req.as_messages() == (Message(role="user", content="hi"),)
    assert req.stop == ("END",)


def test_boundaries_are_accepted() -> None:
    LLMRequest(prompt="x", temperature=2, top_p=1, max_tokens=1)
