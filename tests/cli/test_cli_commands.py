"""``llmlb`` demo, bench, health, sim and ``--help``, end to end in subprocesses."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from llmlb_actors.cli import build_parser, main
from llmlb_actors.sim import Behaviour, SimProvider, open_simulator
from tests.cli.clitools import SECRET, cli_env, write_config

if TYPE_CHECKING:
    import subprocess
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
    assert set(report["providers"]) == {"alpha", "beta", "gamma"}
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
    down_row = next(line for line in unhealthy.stdout.splitlines() if "│ down" in line)
    assert "DOWN" in down_row
    assert "connect" in down_row.lower()  # why, not just "health probe failed"
    assert bench.returncode == 0, bench.stderr
    report = json.loads(bench.stdout)
    assert report["succeeded"] == 100
    assert report["ttft_ms"]["p50"] > 0
    assert report["providers"]["flaky"]["failed_attempts"] > 0  # retried elsewhere
    for done in (healthy, unhealthy, bench):
        assert SECRET not in done.stdout + done.stderr


async def test_health_says_why_a_provider_is_down(tmp_path: Path, run_cli: RunCli) -> None:
    guarded = SimProvider(name="guarded", protocol="openai", api_key=SECRET)
    async with open_simulator([guarded]) as sim:
        entry = {
            "name": "guarded",
            "provider": "openai",
            "model": sim.provider("guarded").model_id,
            "base_url": sim.base_url("guarded"),
            "api_key_env": "LLMLB_TEST_KEY",
        }
        config = write_config(tmp_path / "c.toml", [entry])
        done = await run_cli(
            "health", "--config", str(config), env=cli_env(LLMLB_TEST_KEY="sk-wrong-key-0001")
        )
    assert done.returncode == 1, done.stderr
    assert "HTTP 401: Incorrect API key" in done.stdout
    assert "sk-wrong-key-0001" not in done.stdout + done.stderr
