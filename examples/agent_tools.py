"""A two-step tool loop: the model asks for a tool, you run it, the model answers.

The same loop runs over providers of three wire protocols (OpenAI, Anthropic,
Gemini): `ToolCall.arguments` is always a parsed dict and each tool result goes
back as a ``role="tool"`` message, whichever provider answers the next turn.
The second run loses its first provider between the two steps: the turn that
carries the tool result fails over to Anthropic, mid-conversation.

Runs against the in-process simulator, which calls the offered tool with
arguments made from its schema and then answers in text.
"""

from __future__ import annotations

import json
from typing import Any

import trio

import llmlb_actors as llmlb
from llmlb_actors.sim import SimProvider, Simulator, open_simulator

WEATHER = llmlb.Tool(
    name="get_weather",
    description="The current temperature in a city, in degrees Celsius.",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city's name"}},
        "required": ["city"],
        "additionalProperties": False,
    },
)


def get_weather(city: str) -> dict[str, Any]:
    """The tool itself (a real one would call a weather service)."""
    return {"city": city, "celsius": 21}


TOOLS = {"get_weather": get_weather}


async def agent(
    lb: llmlb.Balancer, question: str, *, between_steps: Any = None, max_steps: int = 4
) -> str:
    """Ask, run the tools the model calls, send the results back, until it answers."""
    messages: list[llmlb.Message] = [llmlb.Message(role="user", content=question)]
    for step in range(1, max_steps + 1):
        resp = await lb.request(llmlb.LLMRequest(messages=messages, tools=[WEATHER]))
        print(f"  step {step}: {resp.provider:<7} finish={resp.finish_reason}")
        if not resp.tool_calls:
            return resp.content
        messages.append(
            llmlb.Message(role="assistant", content=resp.content, tool_calls=resp.tool_calls)
        )
        for call in resp.tool_calls:
            result = TOOLS[call.name](**call.arguments)
            print(f"    ran {call.name}({call.arguments}) -> {result}")
            messages.append(
                llmlb.Message(role="tool", tool_call_id=call.id, content=json.dumps(result))
            )
        if between_steps is not None:
            await between_steps()
    raise RuntimeError(f"no answer after {max_steps} steps")


async def main() -> None:
    simulated = [
        SimProvider(name="openai", protocol="openai", api_key="sk-demo"),
        SimProvider(name="claude", protocol="anthropic", api_key="sk-ant-demo"),
        SimProvider(name="gemini", protocol="gemini", api_key="demo-key"),
    ]
    async with open_simulator(simulated) as sim:
        providers = [sim.provider_config(p.name) for p in simulated]

        print("round-robin: each step may land on another protocol")
        async with llmlb.open_balancer(providers=providers, health_check_interval=None) as lb:
            for city in ("Paris", "Oslo"):
                answer = await agent(lb, f"What is the weather in {city}?")
                print(f"  answer: {answer}")

        print("failover: the first provider goes down between the two steps")
        async with llmlb.open_balancer(
            strategy="failover", providers=providers, health_check_interval=None, retry_delay=0
        ) as lb:
            answer = await agent(
                lb, "What is the weather in Rome?", between_steps=lambda: _take_down(sim, "openai")
            )
            print(f"  answer: {answer}")


async def _take_down(sim: Simulator, name: str) -> None:
    if sim.is_running(name):
        await sim.stop_provider(name)
        print(f"    ({name} is down)")


if __name__ == "__main__":
    trio.run(main)
