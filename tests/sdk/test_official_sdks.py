"""The simulator, checked by clients nobody here wrote: each provider's official Python SDK.

Every SDK makes a whole call and a streaming call against the simulator and must
parse them without error into the simulator's exact text, finish reason and
usage (the simulator counts words, so the numbers are exact). A wrong key must
raise the SDK's own authentication error, and each SDK's model listing (our
health probe) must parse too.

The SDKs are blocking clients (some run asyncio or httpx2 underneath), so the
simulator runs in a background thread with its own ``trio.run``; the tests talk
to it through ``trio.from_thread`` and stop it with a cancel scope at teardown.
"""

from __future__ import annotations

import gc
import json
import logging
import queue
import threading
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import cohere
import cohere.errors
import httpx
import pydantic
import pytest
import trio
from anthropic import Anthropic
from anthropic import APIStatusError as AnthropicStatusError
from anthropic import AuthenticationError as AnthropicAuthError
from anthropic import OverloadedError as AnthropicOverloadedError
from anthropic import RateLimitError as AnthropicRateLimitError
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from mistralai.client import Mistral
from mistralai.client import errors as mistral_errors
from mistralai.client.models import BaseModelCard
from openai import APIError as OpenAIAPIError
from openai import AuthenticationError as OpenAIAuthError
from openai import AzureOpenAI, OpenAI
from openai import InternalServerError as OpenAIServerError
from openai import RateLimitError as OpenAIRateLimitError

from llmlb_actors.sim import Behaviour, SimProvider, SimStats, Simulator, open_simulator

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.sdk

KEY = "sk-sim-fidelity-key"
WRONG_KEY = "sk-not-the-right-key"
SYSTEM = "Answer in one sentence"
USER = "Why do trio nurseries matter"
REPLY = "Trio nurseries keep every child task in sight until each one is done"
PROMPT_TOKENS = len(SYSTEM.split()) + len(USER.split())
COMPLETION_TOKENS = len(REPLY.split())
CHUNKS = 4
TIMEOUT = 10.0
MODELS = {
    "openai": "gpt-sim",
    "anthropic": "claude-sim",
    "gemini": "gemini-sim",
    "cohere": "command-sim",
    "mistral": "mistral-sim",
}
SDKS = tuple(MODELS)
AZURE_DEPLOYMENT = "gpt-sim-deployment"

_T = TypeVar("_T")


# -- the simulator in its own thread ------------------------------------------------


class _Started(NamedTuple):
    token: trio.lowlevel.TrioToken
    scope: trio.CancelScope
    sim: Simulator
    urls: dict[str, tuple[str, str]]


class ThreadedSimulator:
    """A simulator served from a background thread, for blocking SDK clients.

    Every call into the simulator runs in its own trio thread via
    ``trio.from_thread``, so scripts and stats are never touched concurrently.
    """

    def __init__(self, providers: list[SimProvider]) -> None:
        self._providers = providers
        self._handoff: queue.Queue[_Started | BaseException] = queue.Queue()
        self._thread = threading.Thread(target=self._main, name="simulator", daemon=True)
        self._started: _Started | None = None
        self._crash: BaseException | None = None

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # handed to the test thread, re-raised there
            self._crash = exc
            self._handoff.put(exc)

    async def _serve(self) -> None:
        with trio.CancelScope() as scope:
            async with open_simulator(self._providers) as sim:
                urls = {name: (sim.url(name), sim.base_url(name)) for name in sim.names}
                self._handoff.put(_Started(trio.lowlevel.current_trio_token(), scope, sim, urls))
                await trio.sleep_forever()

    def __enter__(self) -> ThreadedSimulator:
        self._thread.start()
        started = self._handoff.get(timeout=TIMEOUT)
        if isinstance(started, BaseException):
            raise RuntimeError("the simulator thread failed to start") from started
        self._started = started
        return self

    def __exit__(self, *exc_info: object) -> None:
        started = self._started
        assert started is not None
        trio.from_thread.run_sync(started.scope.cancel, trio_token=started.token)
        self._thread.join(TIMEOUT)
        assert not self._thread.is_alive(), "the simulator thread did not stop"
        if self._crash is not None:
            raise RuntimeError("the simulator thread crashed") from self._crash

    def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        assert self._started is not None
        return trio.from_thread.run_sync(fn, *args, trio_token=self._started.token)

    def url(self, name: str) -> str:
        assert self._started is not None
        return self._started.urls[name][0]

    def base_url(self, name: str) -> str:
        assert self._started is not None
        return self._started.urls[name][1]

    def stats(self, name: str) -> SimStats:
        assert self._started is not None
        return self._call(self._started.sim.stats, name)

    def script(self, name: str, outcomes: list[str]) -> None:
        assert self._started is not None
        self._call(self._started.sim.script, name, outcomes)


@pytest.fixture
def sim() -> Iterator[ThreadedSimulator]:
    providers = [
        SimProvider(
            name=name,
            protocol=name,  # type: ignore[arg-type]
            api_key=KEY,
            model=model,
            behaviour=Behaviour(reply=REPLY, chunks=CHUNKS),
        )
        for name, model in MODELS.items()
    ]
    providers.append(
        SimProvider(
            name="azure",
            protocol="azure",
            api_key=KEY,
            model=AZURE_DEPLOYMENT,
            behaviour=Behaviour(reply=REPLY, chunks=CHUNKS),
        )
    )
    with ThreadedSimulator(providers) as threaded:
        yield threaded


# -- one driver per SDK -------------------------------------------------------------


class Result(NamedTuple):
    """What an SDK made of one answer. ``total`` is None where the API gives none."""

    text: str
    finish: str | None
    prompt: float
    completion: float
    total: float | None
    deltas: int = 1


@contextmanager
def openai_client(sim: ThreadedSimulator, key: str) -> Iterator[OpenAI]:
    with OpenAI(
        api_key=key, base_url=sim.base_url("openai"), max_retries=0, timeout=TIMEOUT
    ) as client:
        yield client


def openai_whole(
    client: OpenAI, max_tokens: int | None = None, *, model: str = MODELS["openai"]
) -> Result:
    extra: dict[str, Any] = {} if max_tokens is None else {"max_completion_tokens": max_tokens}
    resp = client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}],
        **extra,
    )
    choice = resp.choices[0]
    usage = resp.usage
    assert usage is not None
    assert choice.message.content is not None
    return Result(
        choice.message.content,
        choice.finish_reason,
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.total_tokens,
    )


def openai_stream(client: OpenAI, *, model: str = MODELS["openai"]) -> Result:
    deltas: list[str] = []
    finish = None
    usage = None
    with client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}],
        stream=True,
        stream_options={"include_usage": True},
    ) as stream:
        for chunk in stream:
            if chunk.choices:
                choice = chunk.choices[0]
                if choice.delta.content:
                    deltas.append(choice.delta.content)
                finish = choice.finish_reason or finish
            if chunk.usage is not None:
                assert usage is None, "usage must come in exactly one chunk"
                assert not chunk.choices, "the usage chunk has empty choices"
                usage = chunk.usage
    assert usage is not None
    return Result(
        "".join(deltas),
        finish,
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.total_tokens,
        len(deltas),
    )


def openai_models(client: OpenAI) -> list[str]:
    return [model.id for model in client.models.list()]


@contextmanager
def anthropic_client(sim: ThreadedSimulator, key: str) -> Iterator[Anthropic]:
    with Anthropic(
        api_key=key, base_url=sim.base_url("anthropic"), max_retries=0, timeout=TIMEOUT
    ) as client:
        yield client


def anthropic_whole(client: Anthropic, max_tokens: int | None = None) -> Result:
    message = client.messages.create(
        model=MODELS["anthropic"],
        max_tokens=max_tokens or 256,
        system=SYSTEM,
        messages=[{"role": "user", "content": USER}],
    )
    text = "".join(block.text for block in message.content if block.type == "text")
    usage = message.usage
    return Result(text, message.stop_reason, usage.input_tokens, usage.output_tokens, None)


def anthropic_stream(client: Anthropic) -> Result:
    # The SDK's stream helper accumulates every event into the final message, so it
    # checks message_start, the deltas and message_delta's cumulative usage at once.
    with client.messages.stream(
        model=MODELS["anthropic"],
        max_tokens=256,
        system=SYSTEM,
        messages=[{"role": "user", "content": USER}],
    ) as stream:
        deltas = list(stream.text_stream)
        message = stream.get_final_message()
    text = "".join(block.text for block in message.content if block.type == "text")
    assert text == "".join(deltas)
    usage = message.usage
    return Result(
        text, message.stop_reason, usage.input_tokens, usage.output_tokens, None, len(deltas)
    )


def anthropic_models(client: Anthropic) -> list[str]:
    return [model.id for model in client.models.list()]


@contextmanager
def gemini_client(
    sim: ThreadedSimulator, key: str, api_version: str | None = None
) -> Iterator[genai.Client]:
    options = genai_types.HttpOptions(
        base_url=sim.base_url("gemini"), timeout=int(TIMEOUT * 1000), api_version=api_version
    )
    with genai.Client(api_key=key, http_options=options) as client:
        yield client


def _finish_name(reason: object) -> str | None:
    return None if reason is None else str(getattr(reason, "value", reason))


def gemini_whole(client: genai.Client, max_tokens: int | None = None) -> Result:
    resp = client.models.generate_content(
        model=MODELS["gemini"],
        contents=USER,
        config=genai_types.GenerateContentConfig(
            system_instruction=SYSTEM, max_output_tokens=max_tokens
        ),
    )
    assert resp.candidates
    assert resp.usage_metadata is not None
    usage = resp.usage_metadata
    assert usage.prompt_token_count is not None
    assert usage.candidates_token_count is not None
    return Result(
        resp.text or "",
        _finish_name(resp.candidates[0].finish_reason),
        usage.prompt_token_count,
        usage.candidates_token_count,
        usage.total_token_count,
    )


def gemini_stream(client: genai.Client) -> Result:
    deltas: list[str] = []
    finish = None
    usage = None
    for chunk in client.models.generate_content_stream(
        model=MODELS["gemini"],
        contents=USER,
        config=genai_types.GenerateContentConfig(system_instruction=SYSTEM),
    ):
        if chunk.text:
            deltas.append(chunk.text)
        assert chunk.candidates
        finish = _finish_name(chunk.candidates[0].finish_reason) or finish
        usage = chunk.usage_metadata or usage  # cumulative on every chunk: keep the last
    assert usage is not None
    assert usage.prompt_token_count is not None
    assert usage.candidates_token_count is not None
    return Result(
        "".join(deltas),
        finish,
        usage.prompt_token_count,
        usage.candidates_token_count,
        usage.total_token_count,
        len(deltas),
    )


def gemini_models(client: genai.Client) -> list[str]:
    return [model.name or "" for model in client.models.list()]


@contextmanager
def cohere_client(sim: ThreadedSimulator, key: str) -> Iterator[cohere.ClientV2]:
    with httpx.Client(timeout=TIMEOUT) as http:
        yield cohere.ClientV2(
            api_key=key, base_url=sim.base_url("cohere"), max_retries=0, httpx_client=http
        )


_COHERE_MESSAGES: Any = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]


def _cohere_usage(usage: Any) -> tuple[float, float]:
    # The two buckets are equal in the simulator; the SDK must parse both.
    assert usage.billed_units.input_tokens == usage.tokens.input_tokens
    assert usage.billed_units.output_tokens == usage.tokens.output_tokens
    return usage.tokens.input_tokens, usage.tokens.output_tokens


def cohere_whole(client: cohere.ClientV2, max_tokens: int | None = None) -> Result:
    resp = client.chat(model=MODELS["cohere"], messages=_COHERE_MESSAGES, max_tokens=max_tokens)
    assert resp.message.content is not None
    text = "".join(item.text for item in resp.message.content if item.type == "text")
    prompt, completion = _cohere_usage(resp.usage)
    return Result(text, resp.finish_reason, prompt, completion, None)


def cohere_stream(client: cohere.ClientV2) -> Result:
    deltas: list[str] = []
    end: Any = None
    for event in client.chat_stream(model=MODELS["cohere"], messages=_COHERE_MESSAGES):
        if event.type == "content-delta":
            text = event.delta.message.content.text  # type: ignore[union-attr]
            assert text is not None
            deltas.append(text)
        elif event.type == "message-end":
            end = event.delta
    assert end is not None, "no message-end event"
    prompt, completion = _cohere_usage(end.usage)
    return Result("".join(deltas), end.finish_reason, prompt, completion, None, len(deltas))


def cohere_models(client: cohere.ClientV2) -> list[str]:
    return [model.name or "" for model in client.models.list().models or []]


class NoAsyncClient:
    """mistralai's ``async_client`` for sync-only use: never called, nothing to close.

    Left to itself, ``Mistral()`` builds an ``httpx.AsyncClient`` and closes it
    from a ``weakref.finalize`` with ``asyncio.run(aclose())``. The client sits
    in a reference cycle, so the garbage collector runs that on whichever
    thread happens to collect: the simulator's thread too, in the middle of a
    trio task. There sniffio says "trio" (trio.run sets it for the thread), so
    httpcore enters a trio cancel scope on that unrelated task; if the task is
    being cancelled (the simulator's teardown), leaving the scope delivers the
    cancellation again inside trio's own delivery: TrioInternalError ("FATAL
    INTERNAL ERROR", Task._attempt_abort). A client we pass is ours to close,
    and mistralai's finalizer leaves it alone.
    """

    async def send(self, request: Any, **kwargs: Any) -> Any:
        raise AssertionError("the sync Mistral client must not use its async client")

    def build_request(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the sync Mistral client must not use its async client")

    async def aclose(self) -> None:
        pass


@contextmanager
def mistral_client(sim: ThreadedSimulator, key: str) -> Iterator[Mistral]:
    # mistralai wants the origin: its operations carry the /v1 prefix themselves.
    with Mistral(
        api_key=key,
        server_url=sim.url("mistral"),
        timeout_ms=int(TIMEOUT * 1000),
        async_client=NoAsyncClient(),
    ) as m:
        yield m


_MISTRAL_MESSAGES: Any = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]


def mistral_whole(client: Mistral, max_tokens: int | None = None) -> Result:
    resp = client.chat.complete(
        model=MODELS["mistral"], messages=_MISTRAL_MESSAGES, max_tokens=max_tokens
    )
    choice = resp.choices[0]
    assert choice.message is not None
    content = choice.message.content
    assert isinstance(content, str)
    usage = resp.usage
    return Result(
        content,
        choice.finish_reason,
        usage.prompt_tokens or 0,
        usage.completion_tokens or 0,
        usage.total_tokens,
    )


def mistral_stream(client: Mistral) -> Result:
    deltas: list[str] = []
    finish = None
    usage = None
    with client.chat.stream(model=MODELS["mistral"], messages=_MISTRAL_MESSAGES) as events:
        for event in events:
            chunk = event.data
            choice = chunk.choices[0]
            if isinstance(choice.delta.content, str) and choice.delta.content:
                deltas.append(choice.delta.content)
            if choice.finish_reason is not None:
                # Mistral's difference from OpenAI: usage rides on the finishing chunk.
                assert chunk.usage is not None
                finish = choice.finish_reason
                usage = chunk.usage
    assert usage is not None
    return Result(
        "".join(deltas),
        finish,
        usage.prompt_tokens or 0,
        usage.completion_tokens or 0,
        usage.total_tokens,
        len(deltas),
    )


def mistral_models(client: Mistral) -> list[str]:
    names = []
    for model in client.models.list().data or []:
        # The SDK falls back to UnknownModelListData for an entry it cannot classify.
        assert isinstance(model, BaseModelCard), model
        names.append(model.id)
    return names


class SDK(NamedTuple):
    client: Callable[[ThreadedSimulator, str], AbstractContextManager[Any]]
    whole: Callable[..., Result]
    stream: Callable[[Any], Result]
    models: Callable[[Any], list[str]]
    finish: str
    truncated: str
    has_total: bool
    auth_headers: frozenset[str]
    """Header names any of which carries the key (redacted in the stats)."""


DRIVERS = {
    "openai": SDK(
        openai_client,
        openai_whole,
        openai_stream,
        openai_models,
        "stop",
        "length",
        True,
        frozenset({"authorization"}),
    ),
    # anthropic 2.x sends the API key as a Bearer token; older SDKs sent x-api-key.
    "anthropic": SDK(
        anthropic_client,
        anthropic_whole,
        anthropic_stream,
        anthropic_models,
        "end_turn",
        "max_tokens",
        False,
        frozenset({"authorization", "x-api-key"}),
    ),
    "gemini": SDK(
        gemini_client,
        gemini_whole,
        gemini_stream,
        gemini_models,
        "STOP",
        "MAX_TOKENS",
        True,
        frozenset({"x-goog-api-key"}),
    ),
    "cohere": SDK(
        cohere_client,
        cohere_whole,
        cohere_stream,
        cohere_models,
        "COMPLETE",
        "MAX_TOKENS",
        False,
        frozenset({"authorization"}),
    ),
    "mistral": SDK(
        mistral_client,
        mistral_whole,
        mistral_stream,
        mistral_models,
        "stop",
        "length",
        True,
        frozenset({"authorization"}),
    ),
}


def expected(driver: SDK, finish: str, completion: int, text: str) -> Result:
    total = PROMPT_TOKENS + completion if driver.has_total else None
    return Result(text, finish, PROMPT_TOKENS, completion, total)


def assert_key_reached_sim(stats: SimStats, driver: SDK) -> None:
    sent = driver.auth_headers & stats.last_headers.keys()
    assert sent, f"none of {sorted(driver.auth_headers)} in {sorted(stats.last_headers)}"
    for name in sent:
        assert stats.last_headers[name] in ("***", "Bearer ***")
    assert KEY not in repr(stats)


# -- the checks ---------------------------------------------------------------------


@pytest.mark.parametrize("name", SDKS)
def test_whole_call_parses_to_the_simulators_text_finish_and_usage(
    sim: ThreadedSimulator, name: str
) -> None:
    driver = DRIVERS[name]
    with driver.client(sim, KEY) as client:
        result = driver.whole(client)
    assert result == expected(driver, driver.finish, COMPLETION_TOKENS, REPLY)
    stats = sim.stats(name)
    assert stats.outcomes == {"ok": 1}
    assert stats.streams == 0
    assert_key_reached_sim(stats, driver)


@pytest.mark.parametrize("name", SDKS)
def test_stream_parses_to_the_simulators_text_finish_and_usage(
    sim: ThreadedSimulator, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    driver = DRIVERS[name]
    with caplog.at_level(logging.WARNING), driver.client(sim, KEY) as client:
        result = driver.stream(client)
    assert result._replace(deltas=1) == expected(driver, driver.finish, COMPLETION_TOKENS, REPLY)
    assert result.deltas == CHUNKS, "the text must arrive as the simulator's deltas"
    # cohere skips events it cannot parse with only a logged warning: none may be skipped.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    stats = sim.stats(name)
    assert stats.outcomes == {"ok": 1}
    assert stats.streams == 1
    assert_key_reached_sim(stats, driver)


@pytest.mark.parametrize("name", SDKS)
def test_max_tokens_truncates_with_the_protocols_finish_reason(
    sim: ThreadedSimulator, name: str
) -> None:
    driver = DRIVERS[name]
    with driver.client(sim, KEY) as client:
        result = driver.whole(client, 3)
    short = " ".join(REPLY.split()[:3])
    assert result == expected(driver, driver.truncated, 3, short)


WRONG_KEY_ERRORS: dict[str, tuple[type[BaseException], Callable[[Any], bool]]] = {
    "openai": (OpenAIAuthError, lambda e: e.status_code == 401),
    "anthropic": (AnthropicAuthError, lambda e: e.status_code == 401),
    # Gemini has no authentication class: the real API answers a bad key with
    # 400 INVALID_ARGUMENT, reason API_KEY_INVALID, and the SDK raises ClientError.
    "gemini": (
        genai_errors.ClientError,
        lambda e: e.code == 400 and "API_KEY_INVALID" in str(e.details),
    ),
    "cohere": (cohere.errors.UnauthorizedError, lambda e: e.status_code == 401),
    # mistralai 3.x has no authentication class either: a 401 is a plain SDKError.
    "mistral": (mistral_errors.SDKError, lambda e: e.status_code == 401),
}


@pytest.mark.parametrize("name", SDKS)
def test_wrong_key_raises_the_sdks_own_authentication_error(
    sim: ThreadedSimulator, name: str
) -> None:
    driver = DRIVERS[name]
    error, check = WRONG_KEY_ERRORS[name]
    with driver.client(sim, WRONG_KEY) as client, pytest.raises(error) as caught:
        driver.whole(client)
    assert check(caught.value), repr(caught.value)
    assert WRONG_KEY not in str(caught.value)
    assert sim.stats(name).outcomes == {"401" if name != "gemini" else "400": 1}


def _gemini_retry_delay(error: genai_errors.APIError) -> str | None:
    details = (error.details or {}).get("error", {}).get("details", [])
    return next((d["retryDelay"] for d in details if "retryDelay" in d), None)


# Each SDK's own class for the simulator's rate limit (429, Retry-After 1 s, the
# default) and overload answers (529 on Anthropic, 503 elsewhere).
OVERLOADS: dict[str, tuple[str, type[BaseException], Callable[[Any], bool]]] = {
    "openai": ("503", OpenAIServerError, lambda e: e.status_code == 503),
    "anthropic": ("529", AnthropicOverloadedError, lambda e: e.status_code == 529),
    "gemini": ("503", genai_errors.ServerError, lambda e: e.status == "UNAVAILABLE"),
    "cohere": ("503", cohere.errors.ServiceUnavailableError, lambda e: e.status_code == 503),
    "mistral": ("503", mistral_errors.SDKError, lambda e: e.status_code == 503),
}
RATE_LIMITS: dict[str, tuple[type[BaseException], Callable[[Any], bool]]] = {
    "openai": (OpenAIRateLimitError, lambda e: e.response.headers["retry-after"] == "1"),
    "anthropic": (AnthropicRateLimitError, lambda e: e.response.headers["retry-after"] == "1"),
    # Gemini sends no Retry-After header: the delay is a google.rpc.RetryInfo detail.
    "gemini": (
        genai_errors.ClientError,
        lambda e: e.status == "RESOURCE_EXHAUSTED" and _gemini_retry_delay(e) == "1s",
    ),
    "cohere": (cohere.errors.TooManyRequestsError, lambda e: e.headers["retry-after"] == "1"),
    "mistral": (
        mistral_errors.SDKError,
        lambda e: e.status_code == 429 and e.headers["retry-after"] == "1",
    ),
}


@pytest.mark.parametrize("name", SDKS)
def test_rate_limit_and_overload_answers_raise_the_sdks_own_errors(
    sim: ThreadedSimulator, name: str
) -> None:
    driver = DRIVERS[name]
    overload, overload_error, overload_check = OVERLOADS[name]
    rate_error, rate_check = RATE_LIMITS[name]
    sim.script(name, ["429", overload])
    with driver.client(sim, KEY) as client:
        with pytest.raises(rate_error) as rate_limited:
            driver.whole(client)
        assert rate_check(rate_limited.value), repr(rate_limited.value)
        with pytest.raises(overload_error) as overloaded:
            driver.whole(client)
        assert overload_check(overloaded.value), repr(overloaded.value)
    assert sim.stats(name).outcomes == {"429": 1, overload: 1}


@pytest.mark.parametrize("name", SDKS)
def test_model_listing_health_endpoint_parses(sim: ThreadedSimulator, name: str) -> None:
    driver = DRIVERS[name]
    with driver.client(sim, KEY) as client:
        names = driver.models(client)
    model = MODELS[name]
    assert names == [f"models/{model}" if name == "gemini" else model]
    assert sim.stats(name).health_probes == 1


STREAM_ERRORS: dict[str, type[BaseException]] = {
    "openai": OpenAIAPIError,
    "anthropic": AnthropicStatusError,
    "gemini": genai_errors.ServerError,
    # mistralai has no in-stream error handling: it fails validating the error object
    # as a chunk, with its own error class rather than a silent success.
    "mistral": mistral_errors.MistralError,
}


@pytest.mark.parametrize("name", sorted(STREAM_ERRORS))
def test_in_stream_error_event_raises_in_the_sdk(sim: ThreadedSimulator, name: str) -> None:
    driver = DRIVERS[name]
    sim.script(name, ["stream_error"])
    with driver.client(sim, KEY) as client, pytest.raises(STREAM_ERRORS[name]):
        driver.stream(client)
    assert sim.stats(name).outcomes == {"stream_error": 1}


def test_a_collected_mistral_client_runs_no_event_loop(
    sim: ThreadedSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collector may finalize a client on the simulator's trio thread (see
    `NoAsyncClient`): its finalizer must not start an asyncio loop there."""
    loops: list[str] = []

    def run(main: Any, **_: Any) -> None:
        loops.append(main.__qualname__)
        main.close()

    monkeypatch.setattr("asyncio.run", run)
    with mistral_client(sim, KEY) as client:
        assert mistral_models(client) == [MODELS["mistral"]]
    del client
    gc.collect()
    assert loops == []


def test_cohere_in_stream_error_is_a_message_end_with_error(sim: ThreadedSimulator) -> None:
    # Cohere reports a failed generation in message-end itself (finish_reason ERROR).
    sim.script("cohere", ["stream_error"])
    with cohere_client(sim, KEY) as client:
        events = list(client.chat_stream(model=MODELS["cohere"], messages=_COHERE_MESSAGES))
    end = events[-1]
    assert end.type == "message-end"
    assert end.delta is not None
    assert end.delta.finish_reason == "ERROR"
    assert end.delta.error


@pytest.mark.parametrize(("api_version", "prefix"), [(None, "/v1/"), ("v1beta", "/v1beta/")])
def test_gemini_sdk_reaches_both_api_versions(
    sim: ThreadedSimulator, api_version: str | None, prefix: str
) -> None:
    # google-genai 3.x defaults to v1 where 1.x/2.x used v1beta; both must work.
    with gemini_client(sim, KEY, api_version) as client:
        whole = gemini_whole(client)
        assert sim.stats("gemini").last_path == f"{prefix}models/gemini-sim:generateContent"
        streamed = gemini_stream(client)
    assert sim.stats("gemini").last_path == (
        f"{prefix}models/gemini-sim:streamGenerateContent?alt=sse"
    )
    assert whole.text == streamed.text == REPLY


def test_anthropic_sdk_reads_request_id_and_sends_a_version(sim: ThreadedSimulator) -> None:
    with anthropic_client(sim, KEY) as client:
        message = client.messages.create(
            model=MODELS["anthropic"], max_tokens=16, messages=[{"role": "user", "content": USER}]
        )
    assert message._request_id is not None
    assert message._request_id.startswith("req_sim")
    # Any date is accepted: new SDKs send new versions.
    assert sim.stats("anthropic").last_headers["anthropic-version"]


# -- tools, structured output and Azure, parsed by each SDK's own types -------------------------

WEATHER_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city", "days"],
    "additionalProperties": False,
}
ARGUMENTS = {"city": "sim-city", "days": 1}  # what the simulator derives from the schema
QUESTION = "What is the weather in Paris"
TOOL_RESULT = '{"temperature": 21}'


class Report(pydantic.BaseModel):
    """The structured answer every SDK is asked for (the simulator fills it from the schema)."""

    city: str
    temperature: float
    sunny: bool


EXPECTED_REPORT = Report(city="sim-city", temperature=1.0, sunny=True)
OPENAI_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": WEATHER_PARAMETERS,
    },
}


def _openai_tool_round_trip(client: OpenAI, model: str) -> None:
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    first = client.chat.completions.create(model=model, messages=messages, tools=[OPENAI_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    (call,) = choice.message.tool_calls
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == ARGUMENTS
    # The SDK's stream helper assembles our argument fragments into the same call.
    with client.chat.completions.stream(
        model=model, messages=messages, tools=[OPENAI_TOOL]
    ) as stream:
        final = stream.get_final_completion()
    streamed = final.choices[0].message.tool_calls
    assert streamed is not None
    assert json.loads(streamed[0].function.arguments) == ARGUMENTS
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": TOOL_RESULT})
    second = client.chat.completions.create(model=model, messages=messages, tools=[OPENAI_TOOL])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == REPLY


def test_openai_tool_round_trip(sim: ThreadedSimulator) -> None:
    with openai_client(sim, KEY) as client:
        _openai_tool_round_trip(client, MODELS["openai"])


def test_openai_structured_output_parses_into_the_model(sim: ThreadedSimulator) -> None:
    with openai_client(sim, KEY) as client:
        resp = client.chat.completions.parse(
            model=MODELS["openai"],
            messages=[{"role": "user", "content": QUESTION}],
            response_format=Report,
        )
    assert resp.choices[0].message.parsed == EXPECTED_REPORT
    sent = json.loads(sim.stats("openai").last_body)
    assert sent["response_format"]["type"] == "json_schema"


def test_anthropic_tool_round_trip(sim: ThreadedSimulator) -> None:
    tool: Any = {
        "name": "get_weather",
        "description": "Weather in a city",
        "input_schema": WEATHER_PARAMETERS,
    }
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    with anthropic_client(sim, KEY) as client:
        first = client.messages.create(
            model=MODELS["anthropic"], max_tokens=256, messages=messages, tools=[tool]
        )
        assert first.stop_reason == "tool_use"
        (use,) = [b for b in first.content if b.type == "tool_use"]
        assert (use.name, use.input) == ("get_weather", ARGUMENTS)
        # The stream helper accumulates our input_json_delta fragments into the input.
        with client.messages.stream(
            model=MODELS["anthropic"], max_tokens=256, messages=messages, tools=[tool]
        ) as stream:
            final = stream.get_final_message()
        (streamed,) = [b for b in final.content if b.type == "tool_use"]
        assert streamed.input == ARGUMENTS
        messages.append({"role": "assistant", "content": first.content})
        messages.append(
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": TOOL_RESULT}],
            }
        )
        second = client.messages.create(
            model=MODELS["anthropic"], max_tokens=256, messages=messages, tools=[tool]
        )
    assert second.stop_reason == "end_turn"
    assert [b.text for b in second.content if b.type == "text"] == [REPLY]


def test_anthropic_structured_output_parses_into_the_model(sim: ThreadedSimulator) -> None:
    with anthropic_client(sim, KEY) as client:
        message = client.messages.parse(
            model=MODELS["anthropic"],
            max_tokens=256,
            messages=[{"role": "user", "content": QUESTION}],
            output_format=Report,
        )
    assert message.parsed_output == EXPECTED_REPORT
    sent = json.loads(sim.stats("anthropic").last_body)
    assert sent["output_config"]["format"]["type"] == "json_schema"


def test_gemini_tool_round_trip(sim: ThreadedSimulator) -> None:
    declaration = genai_types.FunctionDeclaration(
        name="get_weather",
        description="Weather in a city",
        parameters_json_schema=WEATHER_PARAMETERS,
    )
    config = genai_types.GenerateContentConfig(
        tools=[genai_types.Tool(function_declarations=[declaration])]
    )
    question = genai_types.Content(role="user", parts=[genai_types.Part(text=QUESTION)])
    with gemini_client(sim, KEY) as client:
        first = client.models.generate_content(
            model=MODELS["gemini"], contents=[question], config=config
        )
        assert first.function_calls is not None
        (call,) = first.function_calls
        assert (call.name, call.args) == ("get_weather", ARGUMENTS)
        streamed = [
            c
            for chunk in client.models.generate_content_stream(
                model=MODELS["gemini"], contents=[question], config=config
            )
            for c in chunk.function_calls or ()
        ]
        assert [(c.name, c.args) for c in streamed] == [("get_weather", ARGUMENTS)]
        assert first.candidates
        assert first.candidates[0].content is not None
        result = genai_types.Part.from_function_response(
            name="get_weather", response=json.loads(TOOL_RESULT)
        )
        second = client.models.generate_content(
            model=MODELS["gemini"],
            contents=[
                question,
                first.candidates[0].content,
                genai_types.Content(role="user", parts=[result]),
            ],
            config=config,
        )
    assert second.function_calls is None
    assert second.text == REPLY


def test_gemini_structured_output_parses_into_the_model(sim: ThreadedSimulator) -> None:
    with gemini_client(sim, KEY) as client:
        resp = client.models.generate_content(
            model=MODELS["gemini"],
            contents=QUESTION,
            config=genai_types.GenerateContentConfig(
                response_mime_type="application/json", response_schema=Report
            ),
        )
    assert resp.parsed == EXPECTED_REPORT


COHERE_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": WEATHER_PARAMETERS,
    },
}


def test_cohere_tool_round_trip(sim: ThreadedSimulator) -> None:
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    with cohere_client(sim, KEY) as client:
        first = client.chat(model=MODELS["cohere"], messages=messages, tools=[COHERE_TOOL])
        assert first.finish_reason == "TOOL_CALL"
        assert first.message.tool_calls is not None
        (call,) = first.message.tool_calls
        assert call.function is not None
        assert call.function.arguments is not None
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == ARGUMENTS
        starts = [
            e for e in client.chat_stream(model=MODELS["cohere"], messages=messages,
                                          tools=[COHERE_TOOL])
            if e.type in ("tool-call-start", "tool-call-delta")
        ]  # fmt: skip
        assert next(e.type for e in starts) == "tool-call-start"
        messages.append(
            {"role": "assistant", "tool_plan": first.message.tool_plan,
             "tool_calls": first.message.tool_calls}
        )  # fmt: skip
        messages.append({"role": "tool", "tool_call_id": call.id, "content": TOOL_RESULT})
        second = client.chat(model=MODELS["cohere"], messages=messages, tools=[COHERE_TOOL])
    assert second.finish_reason == "COMPLETE"
    assert second.message.content is not None
    assert [c.text for c in second.message.content if c.type == "text"] == [REPLY]


def test_cohere_structured_output_parses_into_the_model(sim: ThreadedSimulator) -> None:
    with cohere_client(sim, KEY) as client:
        resp = client.chat(
            model=MODELS["cohere"],
            messages=[{"role": "user", "content": QUESTION}],
            response_format={"type": "json_object", "json_schema": Report.model_json_schema()},
        )
    assert resp.message.content is not None
    (text,) = [c.text for c in resp.message.content if c.type == "text"]
    assert Report.model_validate_json(text) == EXPECTED_REPORT


def test_mistral_tool_round_trip(sim: ThreadedSimulator) -> None:
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    with mistral_client(sim, KEY) as client:
        first = client.chat.complete(model=MODELS["mistral"], messages=messages,
                                     tools=[OPENAI_TOOL])  # fmt: skip
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message is not None
        assert choice.message.tool_calls
        (call,) = choice.message.tool_calls
        assert call.id is not None
        assert len(call.id) == 9
        assert call.id.isalnum()
        assert call.function.name == "get_weather"
        arguments = call.function.arguments
        assert (json.loads(arguments) if isinstance(arguments, str) else arguments) == ARGUMENTS
        messages.append(choice.message.model_dump(exclude_none=True))
        messages.append(
            {"role": "tool", "tool_call_id": call.id, "name": "get_weather", "content": TOOL_RESULT}
        )
        second = client.chat.complete(model=MODELS["mistral"], messages=messages,
                                      tools=[OPENAI_TOOL])  # fmt: skip
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message is not None
    assert second.choices[0].message.content == REPLY


def test_mistral_structured_output_parses_into_the_model(sim: ThreadedSimulator) -> None:
    with mistral_client(sim, KEY) as client:
        resp = client.chat.parse(
            response_format=Report,
            model=MODELS["mistral"],
            messages=[{"role": "user", "content": QUESTION}],
        )
    assert resp.choices is not None
    assert resp.choices[0].message is not None
    assert resp.choices[0].message.parsed == EXPECTED_REPORT


AZURE_VERSION = "2024-10-21"


def test_azure_openai_client_with_api_version(sim: ThreadedSimulator) -> None:
    with AzureOpenAI(
        azure_endpoint=sim.url("azure"),
        api_version=AZURE_VERSION,
        api_key=KEY,
        max_retries=0,
        timeout=TIMEOUT,
    ) as client:
        result = openai_whole(client, model=AZURE_DEPLOYMENT)
        _openai_tool_round_trip(client, AZURE_DEPLOYMENT)
    assert result == Result(REPLY, "stop", PROMPT_TOKENS, COMPLETION_TOKENS,
                            PROMPT_TOKENS + COMPLETION_TOKENS)  # fmt: skip
    stats = sim.stats("azure")
    assert stats.last_path == (
        f"/openai/deployments/{AZURE_DEPLOYMENT}/chat/completions?api-version={AZURE_VERSION}"
    )
    assert stats.last_headers["api-key"] == "***"
    assert KEY not in repr(stats)


def test_plain_openai_client_on_the_azure_v1_api(sim: ThreadedSimulator) -> None:
    with OpenAI(
        base_url=sim.url("azure") + "/openai/v1/", api_key=KEY, max_retries=0, timeout=TIMEOUT
    ) as client:
        result = openai_whole(client, model=AZURE_DEPLOYMENT)
        streamed = openai_stream(client, model=AZURE_DEPLOYMENT)
    assert result.text == streamed.text == REPLY
    assert sim.stats("azure").last_path == "/openai/v1/chat/completions"


def test_azure_refuses_a_wrong_or_missing_key(sim: ThreadedSimulator) -> None:
    with (
        AzureOpenAI(
            azure_endpoint=sim.url("azure"),
            api_version=AZURE_VERSION,
            api_key=WRONG_KEY,
            max_retries=0,
            timeout=TIMEOUT,
        ) as client,
        pytest.raises(OpenAIAuthError) as caught,
    ):
        openai_whole(client, model=AZURE_DEPLOYMENT)
    assert caught.value.status_code == 401
    with httpx.Client(timeout=TIMEOUT) as http:
        missing = http.post(
            sim.url("azure") + "/openai/v1/chat/completions",
            json={"model": AZURE_DEPLOYMENT, "messages": [{"role": "user", "content": "hi"}]},
        )
        models = http.get(sim.url("azure") + "/openai/v1/models", headers={"api-key": KEY})
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "401"
    assert models.status_code == 200
    assert [m["id"] for m in models.json()["data"]] == [AZURE_DEPLOYMENT]
