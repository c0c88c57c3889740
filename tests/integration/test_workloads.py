"""Tools, JSON output and images through the balancer, over loopback to every simulated protocol.

Includes the failover test the feature exists for: a tool-using conversation
whose turns land on providers of three different protocols, each receiving a
body its own API accepts (the simulator enforces each API's rules on tool
turns: Anthropic's tool_result pairing, Gemini's functionResponse names,
Mistral's nine-character ids).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import trio

import llmlb_actors as llmlb
from llmlb_actors import (
    ConfigError,
    ImagePart,
    JSONSchema,
    LLMRequest,
    LLMResponse,
    Message,
    TextPart,
    Tool,
)
from llmlb_actors.sim import SimProvider, Simulator, open_simulator
from llmlb_actors.testing import ZeroJitter
from tests.reliability import _servers as srv

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from trio.testing import MockClock

PROTOCOLS = ("openai", "openai-compatible", "anthropic", "gemini", "cohere", "mistral", "azure")
WEATHER = Tool(
    name="get_weather",
    description="The weather in a city",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
        "required": ["city", "days"],
        "additionalProperties": False,
    },
)
REPORT = JSONSchema(
    name="report",
    schema={
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "temperature": {"type": "number"},
            "tags": {"type": "array", "items": {"enum": ["sunny", "rainy"]}, "minItems": 2},
        },
        "required": ["city", "temperature", "tags"],
        "additionalProperties": False,
    },
)
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    providers = [SimProvider(name=p, protocol=p, api_key=f"key-{p}") for p in PROTOCOLS]
    providers.append(SimProvider(name="azure-classic", protocol="azure", api_key="key-azure"))
    async with open_simulator(providers) as simulator:
        yield simulator


def config(sim: Simulator, name: str) -> llmlb.ProviderConfig:
    if name == "azure-classic":
        return sim.provider_config(name, api_version="2024-10-21")
    return sim.provider_config(name)


def balancer(sim: Simulator, names: tuple[str, ...], **kw: Any) -> Any:
    options: dict[str, Any] = {
        "providers": [config(sim, n) for n in names],
        "health_check_interval": None,
        "rng": ZeroJitter(),
    }
    options.update(kw)
    return llmlb.open_balancer(**options)


def follow_up(request: LLMRequest, answer: LLMResponse, result: str) -> LLMRequest:
    """The next turn of a tool loop: the model's calls, then one result per call."""
    messages = [
        *(request.messages or ()),
        Message(role="assistant", content=answer.content, tool_calls=answer.tool_calls),
        *(Message(role="tool", tool_call_id=c.id, content=result) for c in answer.tool_calls),
    ]
    return LLMRequest(messages=messages, tools=request.tools)


ASK = LLMRequest(
    messages=[Message(role="user", content="What is the weather in Paris?")], tools=[WEATHER]
)


@pytest.mark.parametrize("name", [*PROTOCOLS, "azure-classic"])
async def test_tool_loop_whole_and_streamed(sim: Simulator, name: str) -> None:
    async with balancer(sim, (name,)) as lb:
        first = await lb.request(ASK)
        assert first.finish_reason == "tool_calls"
        (call,) = first.tool_calls
        assert (call.name, call.arguments) == ("get_weather", {"city": "sim-city", "days": 1})
        async with lb.stream(ASK) as chunks:
            got = [chunk async for chunk in chunks]
        streamed = [c for chunk in got for c in chunk.tool_calls]
        assert [(c.name, c.arguments) for c in streamed] == [(call.name, call.arguments)]
        assert got[-1].finish_reason == "tool_calls"
        second = await lb.request(follow_up(ASK, first, '{"temperature": 21}'))
    assert second.finish_reason == "stop"
    assert second.tool_calls == ()
    assert second.content.startswith(f"Simulated reply from {name} to:")
    assert "21" in second.content  # the simulator answers about the tool result


@pytest.mark.parametrize("name", [*PROTOCOLS, "azure-classic"])
async def test_structured_output_and_json_mode(sim: Simulator, name: str) -> None:
    async with balancer(sim, (name,)) as lb:
        report = await lb.request(LLMRequest(prompt="Report on Paris", response_format=REPORT))
        anything = await lb.request(LLMRequest(prompt="Answer in JSON", response_format="json"))
    assert json.loads(report.content) == {
        "city": "sim-city",
        "temperature": 1.0,
        "tags": ["sunny", "sunny"],
    }
    assert isinstance(json.loads(anything.content), dict)
    assert report.finish_reason == anything.finish_reason == "stop"


@pytest.mark.parametrize("name", [*PROTOCOLS, "azure-classic"])
async def test_images_by_url_and_by_bytes_are_accepted(sim: Simulator, name: str) -> None:
    request = LLMRequest(
        messages=[
            Message(
                role="user",
                content=[
                    TextPart(text="What is in these pictures?"),
                    ImagePart(url="https://example.com/cat.png"),
                    ImagePart(data=PNG, media_type="image/png"),
                ],
            )
        ]
    )
    async with balancer(sim, (name,)) as lb:
        answer = await lb.request(request)
    assert answer.content.startswith(f"Simulated reply from {name} to: What is in")
    assert sim.stats(name).outcomes == {"ok": 1}


async def test_seed_extra_body_and_metadata(sim: Simulator) -> None:
    request = LLMRequest(
        prompt="hi", seed=5, extra_body={"user": "u-17"}, metadata={"job": "nightly"}
    )
    async with balancer(sim, ("openai", "anthropic")) as lb:
        first = await lb.request(request)
        second = await lb.request(request)
    assert (first.provider, second.provider) == ("openai", "anthropic")
    assert first.metadata == second.metadata == {"job": "nightly"}
    sent = msgspec.json.decode(sim.stats("openai").last_body)
    assert (sent["seed"], sent["user"]) == (5, "u-17")
    assert "metadata" not in sent
    assert "nightly" not in json.dumps(sent)
    # Anthropic has no seed: dropped, never a 400; extra_body still goes through.
    sent = msgspec.json.decode(sim.stats("anthropic").last_body)
    assert "seed" not in sent
    assert sent["user"] == "u-17"


async def test_failover_across_protocols_in_the_middle_of_a_tool_conversation(
    sim: Simulator, autojump_clock: MockClock
) -> None:
    async with balancer(sim, ("openai", "anthropic", "gemini"), strategy="failover") as lb:
        first = await lb.request(ASK)
        assert first.provider == "openai"
        assert first.tool_calls
        turn = follow_up(ASK, first, '{"temperature": 21}')

        await sim.stop_provider("openai")  # connections refused from now on
        second = await lb.request(turn)
        assert second.provider == "anthropic"
        sent = msgspec.json.decode(sim.stats("anthropic").last_body)
        (call,) = first.tool_calls
        assert sent["messages"][1] == {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": call.id, "name": "get_weather", "input": call.arguments}
            ],
        }
        assert sent["messages"][2] == {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": call.id, "content": '{"temperature": 21}'}
            ],
        }

        # The conversation goes on (another call and its result), and Anthropic fails too.
        again = LLMRequest(
            messages=[*(turn.messages or ()), Message(role="user", content="And tomorrow?")],
            tools=[WEATHER],
        )
        third = await lb.request(again)
        assert third.provider == "anthropic"
        assert third.tool_calls
        sim.script("anthropic", ["529", "529", "529", "529"])
        fourth = await lb.request(follow_up(again, third, "rain"))
        assert fourth.provider == "gemini"
        assert fourth.finish_reason == "stop"
    sent = msgspec.json.decode(sim.stats("gemini").last_body)
    contents = sent["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user", "user", "model", "user"]
    assert contents[1]["parts"] == [
        {"functionCall": {"name": "get_weather", "args": call.arguments}}
    ]
    # functionResponse needs the name: taken from the call the result answers.
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"temperature": 21}}}
    ]
    assert contents[5]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"result": "rain"}}}
    ]
    assert sim.stats("gemini").outcomes == {"ok": 1}


async def test_a_conversation_fails_over_into_mistral_and_back(sim: Simulator) -> None:
    async with balancer(sim, ("anthropic", "mistral", "openai")) as lb:
        first = await lb.request(ASK)  # Anthropic ids: toolu_...
        assert first.provider == "anthropic"
        turn = follow_up(ASK, first, "sunny")
        second = await lb.request(turn)  # Mistral refuses ids that are not 9 characters
        assert second.provider == "mistral"
        assert sim.stats("mistral").outcomes == {"ok": 1}
        sent = msgspec.json.decode(sim.stats("mistral").last_body)
        mapped = sent["messages"][1]["tool_calls"][0]["id"]
        assert len(mapped) == 9
        assert mapped.isalnum()
        assert sent["messages"][2]["tool_call_id"] == mapped
        # Back on OpenAI the caller's own ids are sent, untouched.
        third = await lb.request(
            LLMRequest(
                messages=[*(turn.messages or ()), Message(role="user", content="More?")],
                tools=[WEATHER],
            )
        )
        assert third.provider == "openai"
    sent = msgspec.json.decode(sim.stats("openai").last_body)
    assert sent["messages"][1]["tool_calls"][0]["id"] == first.tool_calls[0].id


class TextOnly(llmlb.BaseProvider):
    """A custom provider that declares neither tools nor images."""

    async def make_request(self, request: LLMRequest) -> LLMResponse:
        return LLMResponse(content="text only", model="echo")


class Vision(TextOnly):
    supports_images = True


async def test_requests_with_images_or_tools_only_go_where_they_can(sim: Simulator) -> None:
    image = LLMRequest(
        messages=[Message(role="user", content=[ImagePart(url="https://example.com/x.png")])]
    )
    custom = llmlb.ProviderConfig(name="echo", provider=TextOnly)
    async with llmlb.open_balancer(
        providers=[custom, config(sim, "openai")], health_check_interval=None
    ) as lb:
        answers = [await lb.request(image) for _ in range(3)]
        assert {a.provider for a in answers} == {"openai"}
        assert {(await lb.request(ASK)).provider for _ in range(3)} == {"openai"}
        assert (await lb.request(LLMRequest(prompt="hi"))).provider in ("echo", "openai")

    async with llmlb.open_balancer(providers=[custom], health_check_interval=None) as lb:
        with pytest.raises(ConfigError, match="images") as info:
            await lb.request(image)
        assert "echo" in str(info.value)
        with pytest.raises(ConfigError, match="tools"):
            await lb.request(ASK)

    vision = llmlb.ProviderConfig(name="vision", provider=Vision)
    async with llmlb.open_balancer(providers=[vision], health_check_interval=None) as lb:
        assert (await lb.request(image)).content == "text only"


async def test_bad_input_never_reaches_a_provider(sim: Simulator) -> None:
    async with balancer(sim, ("openai",)) as lb:
        with pytest.raises(ValueError, match="tool_choice"):
            await lb.request(LLMRequest(prompt="x", tools=[WEATHER], tool_choice="nope"))
        with pytest.raises(ValueError, match="tool_call_id"):
            await lb.request(
                LLMRequest(messages=[{"role": "user", "content": "x"}, {"role": "tool",
                                                                       "content": "1"}])
            )  # fmt: skip
    assert sim.stats("openai").requests == 0


async def test_azure_health_probe_works_on_both_url_shapes(sim: Simulator) -> None:
    async with balancer(sim, ("azure", "azure-classic")) as lb:
        assert await lb.health_check() == {"azure": True, "azure-classic": True}
    wrong = [
        sim.provider_config("azure", api_key="wrong"),
        sim.provider_config("azure-classic", api_key="wrong", api_version="2024-10-21"),
    ]
    async with llmlb.open_balancer(providers=wrong, health_check_interval=None) as lb:
        assert await lb.health_check() == {"azure": False, "azure-classic": False}
    assert sim.stats("azure").health_probes == 2
    assert sim.stats("azure-classic").health_probes == 2


# -- a tool conversation handed from protocol to protocol, streamed and whole --------------------

# Each neighbour is a different protocol; Mistral sits between two others (its ids are mapped
# going in and the caller's ids go out again), and Azure comes in both URL shapes.
CHAIN = (
    "openai",
    "azure",
    "anthropic",
    "mistral",
    "gemini",
    "cohere",
    "azure-classic",
    "openai-compatible",
)


async def ask(lb: Any, messages: list[Message], *, stream: bool) -> LLMResponse:
    """One turn, as `lb.request` or read whole from `lb.stream` (tool calls arrive whole)."""
    request = LLMRequest(messages=messages, tools=[WEATHER])
    if not stream:
        answer: LLMResponse = await lb.request(request)
        return answer
    async with lb.stream(request) as chunks:
        got = [chunk async for chunk in chunks]
    assert {c.provider for c in got} == {got[0].provider}
    assert all(c.finish_reason is None for c in got[:-1])
    return LLMResponse(
        content="".join(c.delta for c in got),
        model=got[-1].model,
        provider=got[0].provider,
        finish_reason=got[-1].finish_reason,
        tool_calls=tuple(call for c in got for call in c.tool_calls),
    )


@pytest.mark.parametrize("first_streamed", [False, True])
async def test_a_tool_conversation_fails_over_through_every_protocol(
    sim: Simulator, autojump_clock: MockClock, first_streamed: bool
) -> None:
    messages = [Message(role="user", content="What is the weather in Paris?")]
    async with balancer(sim, CHAIN, strategy="failover") as lb:
        asked = await ask(lb, messages, stream=first_streamed)
        assert (asked.provider, asked.finish_reason) == (CHAIN[0], "tool_calls")
        for i, name in enumerate(CHAIN[1:], start=1):
            # The provider that made the calls goes away before their results are sent.
            await sim.stop_provider(CHAIN[i - 1])
            messages.append(
                Message(role="assistant", content=asked.content, tool_calls=asked.tool_calls)
            )
            messages += [
                Message(role="tool", tool_call_id=c.id, content=f'{{"temperature":{i}}}')
                for c in asked.tool_calls
            ]
            streamed = (i % 2 == 1) != first_streamed
            answered = await ask(lb, messages, stream=streamed)
            assert (answered.provider, answered.finish_reason) == (name, "stop"), streamed
            assert answered.tool_calls == ()
            assert answered.content.startswith(f"Simulated reply from {name} to:")
            assert f'"temperature":{i}' in answered.content  # it read the result we sent
            messages.append(Message(role="assistant", content=answered.content))
            messages.append(Message(role="user", content=f"And in {i} days?"))

            asked = await ask(lb, messages, stream=not streamed)
            assert (asked.provider, asked.finish_reason) == (name, "tool_calls"), streamed
            (call,) = asked.tool_calls
            assert (call.name, call.arguments) == ("get_weather", {"city": "sim-city", "days": 1})
            assert sim.stats(name).outcomes == {"ok": 2}  # each body valid for its protocol
    ids = [c.id for m in messages for c in m.tool_calls]
    assert len(set(ids)) == len(CHAIN) - 1  # one call per provider before the last, all distinct


# -- a provider whose tool-call arguments are not JSON: a typed error, and the call fails over ---

BROKEN_ARGUMENTS = '{"city": "Par'  # cut off mid-string, as a truncating server would send


def broken_tool_call(*, stream: bool) -> bytes:
    """An OpenAI answer (whole or streamed in fragments) whose arguments never parse."""
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather"}}
    if not stream:
        call["function"]["arguments"] = BROKEN_ARGUMENTS
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
        choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
        body = {"id": "c", "object": "chat.completion", "model": "m", "choices": [choice]}
        return srv.whole(200, json.dumps(body).encode())
    pieces = [{**call, "index": 0, "function": {"name": "get_weather", "arguments": ""}}]
    pieces += [{"index": 0, "function": {"arguments": BROKEN_ARGUMENTS[i : i + 4]}}
               for i in range(0, len(BROKEN_ARGUMENTS), 4)]  # fmt: skip
    events = [{"choices": [{"index": 0, "delta": {"tool_calls": [p]}, "finish_reason": None}]}
              for p in pieces]  # fmt: skip
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    data = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    data += b"data: [DONE]\n\n"
    return srv.head(200, ("Content-Type", "text/event-stream")) + srv.chunk(data) + srv.chunk(b"")


@pytest.mark.parametrize("stream", [False, True])
async def test_unparseable_tool_arguments_are_a_typed_error_and_fail_over(
    sim: Simulator, autojump_clock: MockClock, stream: bool
) -> None:
    async def handler(sock: trio.abc.Stream, request: srv.Request) -> None:
        await sock.send_all(broken_tool_call(stream=stream))

    async with trio.open_nursery() as nursery:
        server = await srv.start(nursery, handler)
        broken = llmlb.ProviderConfig(
            name="broken", provider="openai-compatible", base_url=server.url(), model="m",
            api_key_required=False, max_retries=0,
        )  # fmt: skip
        providers = [broken, config(sim, "gemini")]
        async with llmlb.open_balancer(
            providers=providers, strategy="failover", health_check_interval=None, rng=ZeroJitter()
        ) as lb:
            answer = await ask(lb, list(ASK.messages or ()), stream=stream)
            assert answer.provider == "gemini"
            assert [(c.name, c.arguments) for c in answer.tool_calls] == [
                ("get_weather", {"city": "sim-city", "days": 1})
            ]
        async with llmlb.open_balancer(
            providers=[broken], health_check_interval=None, rng=ZeroJitter()
        ) as lb:
            with pytest.raises(llmlb.LoadBalancerError) as info:
                await ask(lb, list(ASK.messages or ()), stream=stream)
        nursery.cancel_scope.cancel()
    errors = info.value.errors
    assert errors
    assert all(e.kind == "protocol" and e.provider == "broken" for e in errors)
    assert "get_weather" in str(errors[0])
    assert "not a JSON object" in str(errors[0])
    assert len(server.requests) == 1 + len(errors)  # once before the failover, then each attempt
