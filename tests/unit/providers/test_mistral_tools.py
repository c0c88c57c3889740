"""Mistral adapter: nine-character tool-call ids both ways, random_seed, whole tool-call chunks."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest

from llmlb_actors import LLMRequest, Message, StreamChunk, ToolCall, Usage
from llmlb_actors._config import ProviderConfig
from llmlb_actors.providers.mistral import MistralAdapter
from tests.unit.providers.adapter_testing import KEY, collect, json_response, sse_body, sse_response
from tests.unit.providers.workload_cases import CALL_A, CALL_B, WEATHER, body, conversation

if TYPE_CHECKING:
    from tests.unit.providers.adapter_testing import MakeProvider

NINE = re.compile(r"^[a-zA-Z0-9]{9}$")


def adapter(**fields: Any) -> MistralAdapter:
    fields.setdefault("name", "mistral")
    fields.setdefault("model", "mistral-small-latest")
    fields.setdefault("api_key", KEY)
    return MistralAdapter(ProviderConfig(**fields))


def test_foreign_ids_become_nine_characters_the_same_for_call_and_result() -> None:
    sent = body(adapter().build_request(conversation(), stream=False).body)
    calls = sent["messages"][2]["tool_calls"]
    results = [m for m in sent["messages"] if m["role"] == "tool"]
    ids = [c["id"] for c in calls]
    assert all(NINE.match(i) for i in ids)
    assert ids[0] != ids[1]
    assert [r["tool_call_id"] for r in results] == ids
    # Stable: the same id maps the same way in every request (a conversation keeps its pairs).
    again = body(adapter().build_request(conversation(), stream=False).body)
    assert [c["id"] for c in again["messages"][2]["tool_calls"]] == ids
    assert (CALL_A.id, CALL_B.id) != tuple(ids)


def test_ids_mistral_made_pass_unchanged() -> None:
    own = ToolCall(id="D681PevKs", name="get_weather", arguments={"city": "Rome"})
    request = LLMRequest(
        messages=[
            Message(role="user", content="hi"),
            Message(role="assistant", content="", tool_calls=[own]),
            Message(role="tool", tool_call_id="D681PevKs", content="warm"),
        ],
        tools=[WEATHER],
        tool_choice="required",
    )
    sent = body(adapter().build_request(request, stream=False).body)
    assert sent["messages"][1]["tool_calls"][0]["id"] == "D681PevKs"
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": "D681PevKs", "content": "warm"}
    assert sent["tool_choice"] == "required"


def test_seed_is_random_seed_and_max_tokens_stays() -> None:
    sent = body(
        adapter().build_request(LLMRequest(prompt="x", seed=3, max_tokens=4), stream=True).body
    )
    assert sent == {
        "model": "mistral-small-latest",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 4,
        "stream": True,
        "random_seed": 3,
    }


async def test_whole_answer_with_object_arguments(make_provider: MakeProvider) -> None:
    answer = {
        "id": "a1",
        "model": "mistral-small-latest",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {"id": "D681PevKs", "type": "function",
                         "function": {"name": "get_weather", "arguments": {"city": "Rome"}}},
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }  # fmt: skip
    provider = make_provider(MistralAdapter, lambda r: json_response(answer))
    resp = await provider.make_request(LLMRequest(prompt="x", tools=[WEATHER]))
    assert resp.tool_calls == (
        ToolCall(id="D681PevKs", name="get_weather", arguments={"city": "Rome"}),
    )
    assert resp.finish_reason == "tool_calls"


@pytest.mark.parametrize("arguments", ['"{\\"city\\": \\"Rome\\"}"', '{"city": "Rome"}'])
async def test_stream_carries_whole_calls_on_the_finishing_chunk(
    make_provider: MakeProvider, arguments: str
) -> None:
    stream = sse_body(f"""
data: {{"id":"a1","model":"mistral-small-latest","choices":[{{"index":0,"delta":{{"role":"assistant","content":""}},"finish_reason":null}}]}}

data: {{"id":"a1","model":"mistral-small-latest","choices":[{{"index":0,"delta":{{"content":"","tool_calls":[{{"id":"D681PevKs","function":{{"name":"get_weather","arguments":{arguments}}},"index":0}}]}},"finish_reason":"tool_calls"}}],"usage":{{"prompt_tokens":7,"total_tokens":10,"completion_tokens":3}}}}

data: [DONE]
""")  # noqa: E501
    provider = make_provider(MistralAdapter, lambda r: sse_response(stream))
    chunks = await collect(provider, LLMRequest(prompt="x", tools=[WEATHER]))
    assert chunks == [
        StreamChunk(tool_calls=(ToolCall(id="D681PevKs", name="get_weather",
                                         arguments={"city": "Rome"}),)),
        StreamChunk(finish_reason="tool_calls", model="mistral-small-latest",
                    usage=Usage(prompt_tokens=7, completion_tokens=3, total_tokens=10)),
    ]  # fmt: skip
