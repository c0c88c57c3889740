"""Helpers for the simulator tests: one request builder per protocol, an SSE splitter."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec

from llmlb_actors.sim import SimProvider, Simulator

PROTOCOLS = ("openai", "anthropic", "gemini", "cohere", "mistral")
KEYS = {p: f"key-{p}" for p in PROTOCOLS}
MODELS = {
    "openai": "gpt-sim",
    "anthropic": "claude-sim",
    "gemini": "gemini-sim",
    "cohere": "command-sim",
    "mistral": "mistral-sim",
}
PROMPT = "Tell me a joke about trio nurseries please"
"""Eight words: the default reply echoes them all."""

SYSTEM = "Be brief"


def providers(**behaviour_kw: Any) -> list[SimProvider]:
    """One keyed provider per protocol, named after its protocol."""
    from llmlb_actors.sim import Behaviour

    return [
        SimProvider(
            name=p,
            protocol=p,  # type: ignore[arg-type]
            api_key=KEYS[p],
            model=MODELS[p],
            behaviour=Behaviour(**behaviour_kw),
        )
        for p in PROTOCOLS
    ]


def auth_headers(protocol: str, key: str | None) -> dict[str, str]:
    if protocol == "anthropic":
        headers = {"anthropic-version": "2023-06-01"}
        if key is not None:
            headers["x-api-key"] = key
        return headers
    if protocol == "gemini":
        return {} if key is None else {"x-goog-api-key": key}
    return {} if key is None else {"authorization": f"Bearer {key}"}


def chat_request(
    sim: Simulator,
    protocol: str,
    *,
    name: str | None = None,
    stream: bool = False,
    key: str | bool | None = True,
    model: str | None = None,
    max_tokens: int | None = None,
    include_usage: bool = True,
    version: str = "v1beta",
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """``(url, headers, json body)`` of a chat request in ``protocol``'s own shape."""
    name = name or protocol
    model = model or MODELS[protocol]
    use_key = KEYS[protocol] if key is True else (None if key is False else key)
    headers = auth_headers(protocol, use_key)
    url = sim.url(name)
    body: dict[str, Any]
    if protocol in ("openai", "mistral", "openai-compatible"):
        body = {
            "model": model,
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": PROMPT},
            ],
        }
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if stream:
            body["stream"] = True
            if include_usage and protocol != "mistral":
                body["stream_options"] = {"include_usage": True}
        return url + "/v1/chat/completions", headers, body
    if protocol == "anthropic":
        body = {
            "model": model,
            "max_tokens": max_tokens or 1024,
            "system": SYSTEM,
            "messages": [{"role": "user", "content": [{"type": "text", "text": PROMPT}]}],
        }
        if stream:
            body["stream"] = True
        return url + "/v1/messages", headers, body
    if protocol == "gemini":
        body = {
            "systemInstruction": {"parts": [{"text": SYSTEM}]},
            "contents": [{"role": "user", "parts": [{"text": PROMPT}]}],
        }
        if max_tokens is not None:
            body["generationConfig"] = {"maxOutputTokens": max_tokens}
        verb = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"{url}/{version}/models/{model}:{verb}", headers, body
    assert protocol == "cohere"
    body = {
        "model": model,
        "stream": stream,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": PROMPT},
        ],
    }
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return url + "/v2/chat", headers, body


def parse_sse(text: str) -> list[tuple[str | None, str]]:
    """``(event, data)`` pairs of an SSE body, checking the framing on the way."""
    assert text.endswith("\n\n"), "an SSE body ends with a blank line"
    events: list[tuple[str | None, str]] = []
    for block in text.split("\n\n")[:-1]:
        event: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
            else:
                raise AssertionError(f"unexpected SSE line {line!r}")
        assert len(data) == 1
        events.append((event, data[0]))
    return events


def decode(data: str | bytes) -> Any:
    return msgspec.json.decode(data)


def client(**kw: Any) -> httpx.AsyncClient:
    """An httpx client for plain loopback HTTP (no TLS: skip loading a CA bundle per test)."""
    kw.setdefault("timeout", 30)
    return httpx.AsyncClient(verify=False, **kw)
