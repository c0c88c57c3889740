"""Secrets: a recognisable API key, then a grep of everything observable for it.

The upstream here is hostile on purpose: it echoes the Authorization header
back in its error messages (as some OpenAI-compatible servers do), in an
in-stream error event and in a redirect's Location, so "the key never
appears" is tested where it is hardest, not only where nothing tries.
Also here: redirects are not followed (a listener of our own, the
redirect's target, receives nothing), and TLS is verified unless turned off
explicitly, which logs a warning from both transports.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import subprocess
import traceback
from functools import partial
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import rich.pretty
import trio
import trustme

import llmlb_actors as llmlb
from llmlb_actors.sim import SimProvider, Simulator
from llmlb_actors.testing import ZeroJitter, provider_instance
from tests.reliability import _servers as srv

if TYPE_CHECKING:
    from pathlib import Path

    from trio.testing import MockClock

KEY = "sk-canary-SECRET-5f4dcc3b5aa765d61d8327deb882cf99"
HEADER_SECRET = "hdr-canary-SECRET-0c4f5e2a"  # a second secret, in a custom header
REQ = llmlb.LLMRequest(prompt="say something", id="r1")


@pytest.fixture(params=["default", "httpx"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _auth(request: srv.Request) -> str:
    """The credentials the request carried, as an upstream that echoes them would."""
    found = [
        match.group(1).decode()
        for name in (rb"authorization", rb"x-extra-auth")
        if (match := re.search(rb"(?im)^" + name + rb":\s*(.+?)\r$", request.head))
    ]
    return " and ".join(found) or "none"


async def echo_handler(sock: trio.abc.Stream, request: srv.Request) -> None:
    """Echoes the caller's credentials into every kind of error it can send."""
    auth = _auth(request)
    body = json.loads(request.body or b"{}")
    prompt = body.get("messages", [{}])[-1].get("content", "")
    if body.get("stream"):
        await sock.send_all(srv.head(200, ("Content-Type", "text/event-stream")))
        await sock.send_all(srv.chunk(srv.delta_event("partial ")))
        error = {"error": {"message": f"stream failed for {auth}", "type": "server_error"}}
        await sock.send_all(srv.chunk(b"data: " + json.dumps(error).encode() + b"\n\n"))
        await sock.send_all(b"0\r\n\r\n")
        return
    status = {"401": 401, "400": 400, "redirect": 307}.get(prompt, 500)
    message = {"error": {"message": f"Incorrect API key provided: {auth}", "type": "x"}}
    headers: list[tuple[str, str]] = [("Retry-After", "0")]
    if status == 307:
        headers.append(("Location", f"http://127.0.0.1:9/steal?key={auth}"))
    await sock.send_all(srv.whole(status, json.dumps(message).encode(), *headers))


def leaks(text: str) -> list[str]:
    return [s for s in (KEY, HEADER_SECRET) if s in text]


class Observed:
    """Everything a user (or a log aggregator) could see, as text."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []

    def add(self, where: str, value: object) -> None:
        self.texts.append((f"repr {where}", repr(value)))
        self.texts.append((f"str {where}", str(value)))
        self.texts.append((f"rich {where}", rich.pretty.pretty_repr(value)))

    def add_exception(self, where: str, exc: BaseException) -> None:
        self.add(where, exc)
        self.texts.append((f"traceback {where}", "".join(traceback.format_exception(exc))))
        for i, error in enumerate(getattr(exc, "errors", [])):
            self.add(f"{where}.errors[{i}]", error)
            self.texts.append((f"{where}.errors[{i}].message", error.message))

    def leaked(self) -> list[str]:
        return [f"{where}: {leaks(text)}" for where, text in self.texts if leaks(text)]


async def test_no_observable_carries_the_key(
    transport: str, caplog: pytest.LogCaptureFixture, autojump_clock: MockClock
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, the library's and the transports'
    seen = Observed()
    states: list[str] = []

    def strategy(candidates: list[llmlb.ProviderState]) -> llmlb.ProviderState:
        states.append(repr(candidates))
        return candidates[0]

    async with trio.open_nursery() as nursery:
        server = await srv.start(nursery, echo_handler)
        provider = llmlb.ProviderConfig(
            name="echo",
            provider="openai-compatible",
            base_url=server.url(),
            model="m",
            api_key=KEY,
            headers={"x-extra-auth": HEADER_SECRET},
        )
        config = llmlb.BalancerConfig(
            providers=[provider],
            strategy="custom",
            custom_strategy=strategy,
            transport=transport,
            max_retries=1,
            retry_delay=0.01,
            failure_threshold=100,
            cooldown=0.01,
            health_check_interval=5.0,
        )
        seen.add("ProviderConfig", provider)
        seen.add("BalancerConfig", config)
        seen.add("LLMRequest", REQ)
        async with llmlb.open_balancer(config, rng=ZeroJitter()) as lb:
            for prompt in ("500", "400", "401", "redirect"):
                with pytest.raises(llmlb.LoadBalancerError) as info:
                    await lb.request(llmlb.LLMRequest(prompt=prompt))
                seen.add_exception(f"request {prompt}", info.value)
                await trio.sleep(1.0)  # past the cool-down of a 401
            with pytest.raises(llmlb.LLMError) as broken:
                await _consume(lb, seen)
            assert broken.value.partial
            seen.add_exception("stream", broken.value)
            await trio.sleep(6.0)  # one active health probe
            seen.add("health_check", await lb.health_check())
            stats = lb.get_stats()
            seen.add("get_stats", stats)
            seen.texts.append(("get_stats json", msgspec.json.encode(stats).decode()))
            seen.add("get_totals", lb.get_totals())
            seen.texts.append(("get_totals json", msgspec.json.encode(lb.get_totals()).decode()))
            seen.add("get_healthy_providers", lb.get_healthy_providers())
            seen.add("balancer", lb)
            seen.add("provider object", provider_instance(lb, "echo"))
        nursery.cancel_scope.cancel()
    # The upstream really did receive (and echo) the key: the test is not vacuous.
    assert any(KEY.encode() in r.head for r in server.requests)
    assert any(HEADER_SECRET.encode() in r.head for r in server.requests)
    assert "Incorrect API key provided: Bearer *** and ***" in str(seen.texts)
    seen.texts += [("strategy snapshot", s) for s in states]
    for record in caplog.records:
        if record.name == "httpcore.http11" and record.getMessage().startswith(
            "receive_response_headers.complete"
        ):
            # httpcore's own DEBUG trace prints response headers verbatim, so the key
            # this upstream echoes in a Location header shows there. That is the
            # upstream's header, logged by a third party; request headers are not.
            continue
        seen.texts.append((f"log {record.name}", record.getMessage()))
        if record.exc_info and record.exc_info[1] is not None:
            formatted = "".join(traceback.format_exception(record.exc_info[1]))
            seen.texts.append((f"log {record.name} exc", formatted))
    assert caplog.records, "nothing was logged: the log check would be vacuous"
    assert not seen.leaked(), seen.leaked()


async def test_a_short_key_echoed_by_the_upstream_is_redacted(autojump_clock: MockClock) -> None:
    """Keys of four characters and up are credentials everywhere (one rule)."""
    short = "k3y5Z"
    async with trio.open_nursery() as nursery:
        server = await srv.start(nursery, echo_handler)
        async with llmlb.open_balancer(
            providers=[
                llmlb.ProviderConfig(
                    name="echo",
                    provider="openai-compatible",
                    base_url=server.url(),
                    model="m",
                    api_key=short,
                )
            ],
            max_retries=0,
            health_check_interval=None,
        ) as lb:
            with pytest.raises(llmlb.LoadBalancerError) as info:
                await lb.request(llmlb.LLMRequest(prompt="500"))
            stats = lb.get_stats()
        nursery.cancel_scope.cancel()
    assert any(short.encode() in r.head for r in server.requests)
    text = "".join(traceback.format_exception(info.value)) + repr(info.value.errors)
    text += msgspec.json.encode(stats).decode()
    assert "Bearer ***" in text
    assert short not in text


def test_an_http_request_hides_credential_headers_in_its_repr() -> None:
    """The adapter marks the key and every credential-looking header as a `Secret`."""
    from llmlb_actors.providers._adapter import adapter_class

    config = llmlb.ProviderConfig(
        name="openai",
        model="m",
        api_key=KEY,
        headers={"X-Extra-Auth": HEADER_SECRET, "X-Trace": "visible-trace-id"},
    )
    adapter = adapter_class("openai")(config)
    for request in (adapter.build_request(REQ, stream=False), adapter.health_request()):
        text = repr(request) + str(request.headers)
        assert not leaks(text), text
        sent = dict(request.headers)
        assert KEY in sent["authorization"]  # still the real value for the transport
    assert "visible-trace-id" in repr(adapter.build_request(REQ, stream=False))


async def _consume(lb: llmlb.Balancer, seen: Observed) -> None:
    async with lb.stream(REQ) as chunks:
        async for chunk in chunks:
            seen.add("StreamChunk", chunk)


async def test_config_errors_never_echo_the_key() -> None:
    bad: list[dict[str, Any]] = [
        {"name": "openai", "model": "m", "api_key": KEY + "\n"},
        {"name": "openai", "model": "m", "api_key": KEY, "headers": {"x": HEADER_SECRET + "\r"}},
        {"name": "openai", "model": "m", "api_key": KEY, "weight": -1},
        {"name": "openai", "model": "m", "api_key": KEY, "api_version": "v1\n" + KEY},
        {"name": "nobody-knows", "model": "m", "api_key": KEY},
    ]
    for fields in bad:
        with pytest.raises(llmlb.ConfigError) as info:
            llmlb.ProviderConfig(**fields)
        text = "".join(traceback.format_exception(info.value)) + repr(info.value)
        assert not leaks(text), (fields, text)


# -- the CLI and its batch output ---------------------------------------------------------


async def test_cli_batch_and_health_output_never_carry_the_key(tmp_path: Path) -> None:
    """``llmlb batch`` (output file, stdout, stderr) and ``llmlb health`` against the echo."""
    from tests.cli.clitools import ROOT, cli_env, command, write_config

    prompts = tmp_path / "prompts.jsonl"
    lines = [{"id": f"q{i}", "prompt": p} for i, p in enumerate(["hi", "500", "400", "401"])]
    prompts.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out.jsonl"
    async with trio.open_nursery() as nursery:
        server = await srv.start(nursery, echo_handler)
        sim_server = await srv.start(nursery, _ok_handler)
        config = write_config(
            tmp_path / "config.toml",
            [
                {
                    "name": "echo",
                    "provider": "openai-compatible",
                    "model": "m",
                    "base_url": server.url(),
                    "api_key_env": "LLMLB_CANARY_KEY",
                    "headers": {"x-extra-auth": HEADER_SECRET},
                },
                {
                    "name": "fine",
                    "provider": "openai-compatible",
                    "model": "m",
                    "base_url": sim_server.url(),
                    "api_key_env": "LLMLB_CANARY_KEY",
                },
            ],
            strategy="failover",
            max_retries=0,
            health_check_interval=1.0,
        )
        env = cli_env(LLMLB_CANARY_KEY=KEY)
        outputs: list[tuple[str, str]] = []
        for args in (
            ("batch", str(prompts), "-o", str(out), "--config", str(config), "-q"),
            ("health", "--config", str(config)),
        ):
            with trio.fail_after(60):
                done = await trio.run_process(
                    command(*args),
                    cwd=ROOT,
                    env=env,
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                    stdin=subprocess.DEVNULL,
                )
            outputs += [(f"{args[0]} stdout", done.stdout.decode())]
            outputs += [(f"{args[0]} stderr", done.stderr.decode())]
        nursery.cancel_scope.cancel()
    outputs.append(("batch output file", out.read_text()))
    # The key and the credential header were sent, and echoed back.
    assert any(KEY.encode() in r.head for r in server.requests)
    assert any(HEADER_SECRET.encode() in r.head for r in server.requests)
    assert '"type": "error"' in outputs[-1][1] or '"type":"error"' in outputs[-1][1]
    leaked = [(where, text) for where, text in outputs if leaks(text)]
    assert not leaked, leaked


async def _ok_handler(sock: trio.abc.Stream, request: srv.Request) -> None:
    await sock.send_all(srv.whole(200, srv.completion("all good")))


# -- redirects -------------------------------------------------------------------------------


async def test_redirects_are_not_followed_and_the_target_sees_nothing(
    transport: str, autojump_clock: MockClock
) -> None:
    async def trap(sock: trio.abc.Stream, request: srv.Request) -> None:
        await sock.send_all(srv.whole(200, srv.completion("you followed me")))

    async with trio.open_nursery() as nursery:
        target = await srv.start(nursery, trap)
        # A simulator whose "redirect" answers 307 to OUR listener instead of a dead port.
        sim = Simulator(nursery, "127.0.0.1", target.port)
        await sim.add(SimProvider(name="mover", protocol="openai", api_key=KEY))
        sim.script("mover", ["redirect"] * 4)
        async with llmlb.open_balancer(
            providers=[sim.provider_config("mover")],
            transport=transport,
            health_check_interval=None,
        ) as lb:
            with pytest.raises(llmlb.LoadBalancerError, match="not followed") as info:
                await lb.request(REQ)
            async with trio.open_nursery() as inner:
                inner.start_soon(partial(_stream_expecting_redirect, lb))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    [error] = info.value.errors
    assert error.status == 307
    assert not error.retryable
    assert f"127.0.0.1:{target.port}" in error.message  # the Location, reported not followed
    assert not leaks(str(info.value))
    assert sim.stats("mover").requests == 2
    assert target.connections == 0
    assert target.requests == []


async def _stream_expecting_redirect(lb: llmlb.Balancer) -> None:
    with pytest.raises(llmlb.LoadBalancerError, match="not followed"):
        await _drain_stream(lb)


async def _drain_stream(lb: llmlb.Balancer) -> None:
    async with lb.stream(REQ) as chunks:
        async for _ in chunks:
            pass


# -- TLS -----------------------------------------------------------------------------------


async def _tls_server(nursery: trio.Nursery) -> tuple[int, srv.RawServer]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    handler = srv.RawServer(_ok_handler)
    listeners = await nursery.start(
        partial(trio.serve_ssl_over_tcp, handler.serve, 0, context, host="127.0.0.1")
    )
    return int(listeners[0].transport_listener.socket.getsockname()[1]), handler


async def test_tls_is_verified_by_default(transport: str, autojump_clock: MockClock) -> None:
    assert llmlb.BalancerConfig(providers=[_tls_config(1)]).verify_tls is True
    async with trio.open_nursery() as nursery:
        port, server = await _tls_server(nursery)
        async with llmlb.open_balancer(
            providers=[_tls_config(port)],
            transport=transport,
            health_check_interval=None,
            max_retries=0,
        ) as lb:
            with pytest.raises(llmlb.LoadBalancerError) as info:
                await lb.request(REQ)
        nursery.cancel_scope.cancel()
    [error] = info.value.errors
    assert error.kind == "tls"  # a misconfiguration: not retried there
    assert not error.retryable
    assert error.message.startswith("TLS: certificate verify failed")
    assert server.requests == []  # nothing (and no key) was sent to the unverified server
    if transport == "default":  # httpcore raises its errors `from None`, hiding the cause
        assert "CERTIFICATE_VERIFY_FAILED" in "".join(traceback.format_exception(error))


async def test_turning_tls_verification_off_is_explicit_and_logged(
    transport: str, caplog: pytest.LogCaptureFixture, autojump_clock: MockClock
) -> None:
    for not_a_bool in ("false", 0, None):
        with pytest.raises(llmlb.ConfigError, match="verify_tls"):
            llmlb.BalancerConfig(providers=[_tls_config(1)], verify_tls=not_a_bool)  # type: ignore[arg-type]
    caplog.set_level(logging.WARNING)
    async with trio.open_nursery() as nursery:
        port, _ = await _tls_server(nursery)
        async with llmlb.open_balancer(
            providers=[_tls_config(port)],
            transport=transport,
            health_check_interval=None,
            verify_tls=False,
        ) as lb:
            resp = await lb.request(REQ)
        nursery.cancel_scope.cancel()
    assert resp.content == "all good"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len([r for r in warnings if "verification is OFF" in r.getMessage()]) == 1


def _tls_config(port: int) -> llmlb.ProviderConfig:
    return llmlb.ProviderConfig(
        name="tls",
        provider="openai-compatible",
        base_url=f"https://127.0.0.1:{port}/v1",
        model="m",
        api_key=KEY,
    )
