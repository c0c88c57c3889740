"""``llmlb`` demo, bench, health, sim and ``--help``, end to end in subprocesses."""

from __future__ import annotations

import json
import signal
import subprocess
from functools import partial
from typing import TYPE_CHECKING

import httpx
import pytest
import trio

from llmlb_actors.cli import build_parser, main
from llmlb_actors.sim import Behaviour, SimProvider, open_simulator
from tests.cli.clitools import ROOT, SECRET, cli_env, command, write_config

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    RunCli = Callable[..., Awaitable[subprocess.CompletedProcess[str]]]

SUBCOMMANDS = ("demo", "batch", "bench", "health", "sim")


async def test_help_from_the_command_line(run_cli: RunCli) -> None:
    done = await run_cli("--help")
    assert done.returncode == 0
    for name in SUBCOMMANDS:
        assert name in done.stdout


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_help_of_each_subcommand(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([name, "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal width
    assert text.startswith(f"usage: llmlb {name}")
    expected = {
        "demo": ["--requests", "--concurrency", "--strategy", "--seed"],
        "batch": ["INPUT.jsonl", "--output", "--config", "--concurrency", "--strategy", "--seed"],
        "bench": ["--config", "--concurrency", "--requests", "--stream", "--json"],
        "health": ["--config", "exit status is 1"],
        "sim": ["--port", "--providers", "SPEC"],
    }[name]
    for option in expected:
        assert option in text


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["batch", "in.jsonl"],
        ["bench", "--concurrency", "0"],
        ["sim", "--providers", "a:nope"],
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    assert "unknown protocol 'nope'" in capsys.readouterr().err
    assert build_parser().prog == "llmlb"


def test_config_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLMLB_TEST_KEY", raising=False)
    keyed = {"name": "openai", "model": "m", "api_key_env": "LLMLB_TEST_KEY"}
    config = write_config(tmp_path / "c.toml", [keyed])
    assert main(["health", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llmlb health: error: ")
    assert "providers[0].api_key_env" in err
    assert "LLMLB_TEST_KEY is not set" in err
    typo = write_config(tmp_path / "t.toml", [{"name": "openai", "model": "m"}], stratgy="x")
    assert main(["bench", "--config", str(typo)]) == 2
    assert "unknown field 'stratgy'" in capsys.readouterr().err


async def test_demo(run_cli: RunCli) -> None:
    done = await run_cli("demo", "--seed", "1")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "200 prompts, concurrency 32" in out
    for name in ("alpha", "beta", "gamma"):
        assert name in out
    assert "Totals: " in out
    assert "Prompts: 200 answered, 0 failed" in out
    # The flaky provider's faults show up and were absorbed by retries.
    gamma = next(line for line in out.splitlines() if line.strip().startswith("gamma ("))
    assert "503x" in gamma
    assert "demo: 200/200 (100%)" in done.stderr


async def test_demo_quota_scenario(run_cli: RunCli) -> None:
    # 40 prompts against a pooled 1,500 rpm: about two seconds of real pacing.
    done = await run_cli("demo", "--scenario", "quota", "--requests", "40", "--seed", "1")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "strategy quota" in out
    assert "pooled 1,500 rpm" in out
    assert "Prompts: 40 answered, 0 failed" in out
    assert "upstream 429s: 0." in out
    gamma = next(line for line in out.splitlines() if line.strip().startswith("gamma ("))
    assert "300 (learned)" in gamma  # its limit came from its headers


async def test_bench_json_and_table(run_cli: RunCli) -> None:
    done = await run_cli("bench", "--requests", "200", "--concurrency", "16", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["requests"] == 200
    assert report["succeeded"] == 200
    assert report["failed"] == 0
    assert report["throughput_rps"] > 0
    latency = report["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert report["ttft_ms"] is None
    assert sum(p["answered"] for p in report["providers"].values()) == 200
    assert set(report["providers"]) == {"alpha", "beta"}
    assert done.stderr == ""  # --json: no progress lines

    streamed = await run_cli("bench", "--requests", "60", "--stream")
    assert streamed.returncode == 0, streamed.stderr
    assert "time to first token" in streamed.stdout
    assert "60 succeeded, 0 failed" in streamed.stdout


async def test_health_exit_status_and_secrets(tmp_path: Path, run_cli: RunCli) -> None:
    """A keyed provider that is up, one that is down; no output shows the key."""
    up = SimProvider(name="up", protocol="anthropic", api_key=SECRET)
    flaky = SimProvider(
        name="flaky", protocol="openai", api_key=SECRET, behaviour=Behaviour(faults={"503": 0.3})
    )
    async with open_simulator([up, flaky]) as sim:
        keyed = [
            {
                "name": name,
                "provider": sim.provider(name).protocol,
                "model": sim.provider(name).model_id,
                "base_url": sim.base_url(name),
                "api_key_env": "LLMLB_TEST_KEY",
            }
            for name in ("up", "flaky")
        ]
        down = {
            "name": "down",
            "provider": "openai-compatible",
            "model": "m",
            "base_url": f"http://127.0.0.1:{sim.redirect_port}/v1",  # refuses connections
            "api_key_env": "LLMLB_TEST_KEY",
        }
        env = cli_env(LLMLB_TEST_KEY=SECRET)
        all_up = write_config(tmp_path / "up.toml", keyed, max_retries=5, retry_delay=0.01)
        with_down = write_config(tmp_path / "down.toml", [*keyed, down])

        healthy = await run_cli("health", "--config", str(all_up), env=env)
        unhealthy = await run_cli("health", "--config", str(with_down), env=env)
        bench = await run_cli(
            "bench", "--config", str(all_up), "--requests", "100", "--stream", "--json", env=env
        )

    assert healthy.returncode == 0, healthy.stderr
    assert "2/2 up" in healthy.stdout
    assert unhealthy.returncode == 1, unhealthy.stderr
    assert "2/3 up; down: down" in unhealthy.stdout
    assert "DOWN" in unhealthy.stdout
    assert bench.returncode == 0, bench.stderr
    report = json.loads(bench.stdout)
    assert report["succeeded"] == 100
    assert report["ttft_ms"]["p50"] > 0
    assert report["providers"]["flaky"]["failed_attempts"] > 0  # retried elsewhere
    for done in (healthy, unhealthy, bench):
        assert SECRET not in done.stdout + done.stderr


async def test_sim_serves_until_ctrl_c(tmp_path: Path) -> None:
    log = tmp_path / "sim.out"
    with log.open("wb") as out_file, trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            proc: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    command("sim", "--providers", "one:openai:latency=0.001,two:anthropic"),
                    cwd=ROOT,
                    env=cli_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=out_file,
                    stderr=subprocess.STDOUT,
                    check=False,
                )
            )
            text = ""
            while "[[providers]]" not in text or not text.endswith("\n\n"):
                await trio.sleep(0.02)
                text = await trio.Path(log).read_text()
            urls = {
                line.split()[0]: line.split("base_url=")[1].split()[0]
                for line in text.splitlines()
                if "base_url=" in line
            }
            assert set(urls) == {"one", "two"}
            assert urls["one"].startswith("http://127.0.0.1:")
            assert urls["one"].endswith("/v1")
            async with httpx.AsyncClient() as client:
                reply = await client.post(
                    urls["one"] + "/chat/completions",
                    json={"model": "gpt-sim", "messages": [{"role": "user", "content": "hi"}]},
                )
            assert reply.status_code == 200
            assert reply.json()["choices"][0]["message"]["content"].endswith("hi")
            proc.send_signal(signal.SIGINT)
            code = await proc.wait()
    assert code == 0
    assert "simulator stopped" in log.read_text()
