"""Azure OpenAI adapter: both URL shapes, the api-key header, health probes, OpenAI's shapes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from llmlb_actors import ConfigError, LLMError, LLMRequest, ToolCall
from llmlb_actors._config import ProviderConfig
from llmlb_actors.providers.azure import AzureOpenAIAdapter
from tests.unit.providers.adapter_testing import KEY, collect, json_response, sse_body, sse_response
from tests.unit.providers.workload_cases import WEATHER, body, conversation

if TYPE_CHECKING:
    from tests.unit.providers.adapter_testing import MakeProvider

BASE = "https://my-res.openai.azure.com"


def adapter(**fields: Any) -> AzureOpenAIAdapter:
    fields.setdefault("name", "azure-eu")
    fields.setdefault("model", "gpt4o-prod")
    fields.setdefault("api_key", KEY)
    fields.setdefault("base_url", BASE)
    return AzureOpenAIAdapter(ProviderConfig(**fields))


def test_name_implies_the_protocol_and_base_url_is_required() -> None:
    config = ProviderConfig(name="azure-eu", model="d", base_url=BASE, api_key=KEY)
    assert config.protocol == "azure"
    with pytest.raises(ConfigError, match="base_url"):
        ProviderConfig(name="azure", model="d", api_key=KEY)
    with pytest.raises(ConfigError, match="API key"):
        ProviderConfig(name="azure", model="d", base_url=BASE)


def test_classic_url_names_the_deployment_and_api_version() -> None:
    a = adapter(api_version="2024-10-21")
    call = a.build_request(LLMRequest(prompt="hi"), stream=False)
    assert call.url == (
        f"{BASE}/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"
    )
    headers = dict(call.headers)
    assert headers["api-key"] == KEY
    assert "authorization" not in headers
    assert body(call.body) == {
        "model": "gpt4o-prod",
        "messages": [{"role": "user", "content": "hi"}],
    }
    health = a.health_request()
    assert (health.method, health.url) == ("GET", f"{BASE}/openai/models?api-version=2024-10-21")
    assert dict(health.headers)["api-key"] == KEY


def test_v1_url_without_api_version() -> None:
    a = adapter()
    call = a.build_request(LLMRequest(prompt="hi", max_tokens=5), stream=True)
    assert call.url == f"{BASE}/openai/v1/chat/completions"
    assert body(call.body) == {
        "model": "gpt4o-prod",
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert a.health_request().url == f"{BASE}/openai/v1/models"


@pytest.mark.parametrize("given", [f"{BASE}/", f"{BASE}/openai", f"{BASE}/openai/v1/"])
def test_base_url_given_down_to_the_api_root_still_works(given: str) -> None:
    assert adapter(base_url=given).build_request(LLMRequest(prompt="x"), stream=False).url == (
        f"{BASE}/openai/v1/chat/completions"
    )


def test_deployment_and_version_are_quoted_into_the_url() -> None:
    a = adapter(model="my dep/x", api_version="2024-10-21&x=1")
    assert a.build_request(LLMRequest(prompt="x"), stream=False).url == (
        f"{BASE}/openai/deployments/my%20dep%2Fx/chat/completions?api-version=2024-10-21%26x%3D1"
    )


def test_tools_and_images_use_openai_shapes() -> None:
    sent = body(adapter().build_request(conversation(tool_choice="get_weather"), stream=False).body)
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["messages"][1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "https://example.com/cat.png"},
    }
    assert sent["messages"][3]["role"] == "tool"


def test_key_never_in_reprs() -> None:
    a = adapter(api_version="2024-10-21")
    for text in (repr(a), repr(a.build_request(LLMRequest(prompt="x"), stream=False))):
        assert KEY not in text


async def test_tool_call_answer_and_stream(make_provider: MakeProvider) -> None:
    answer = {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "call_1", "type": "function",
                                    "function": {"name": "get_weather",
                                                 "arguments": '{"city":"Oslo"}'}}],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "model": "gpt-4o-2024-11-20",
    }  # fmt: skip
    fields = {"base_url": BASE, "api_version": "2024-10-21"}
    provider = make_provider(AzureOpenAIAdapter, lambda r: json_response(answer), **fields)
    resp = await provider.make_request(LLMRequest(prompt="x", tools=[WEATHER]))
    assert resp.tool_calls == (
        ToolCall(id="call_1", name="get_weather", arguments={"city": "Oslo"}),
    )
    stream = sse_body("""
data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","function":{"name":"get_weather","arguments":"{\\"city\\""}}]},"finish_reason":null}]}

data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":\\"Oslo\\"}"}}]},"finish_reason":"tool_calls"}]}

data: [DONE]
""")  # noqa: E501
    provider = make_provider(AzureOpenAIAdapter, lambda r: sse_response(stream), **fields)
    chunks = await collect(provider, LLMRequest(prompt="x", tools=[WEATHER]))
    assert [c.tool_calls for c in chunks if c.tool_calls] == [resp.tool_calls]


async def test_azure_error_bodies_are_read(make_provider: MakeProvider) -> None:
    err = {"error": {"code": "DeploymentNotFound", "message": "The API deployment does not exist."}}
    provider = make_provider(AzureOpenAIAdapter, lambda r: json_response(err, 404), base_url=BASE)
    with pytest.raises(LLMError, match="DeploymentNotFound") as info:
        await provider.make_request(LLMRequest(prompt="x"))
    assert info.value.disables_provider
