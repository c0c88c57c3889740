"""``llmlb`` polish: help with examples that wraps cleanly, one default simulated fleet,
``sim`` output a script can use, exit codes as documented, plurals."""

from __future__ import annotations

import json
import signal
import subprocess
import tomllib
from functools import partial
from typing import TYPE_CHECKING

import httpx
import pytest
import trio

import llmlb_actors as llmlb
from llmlb_actors.cli import main
from tests.cli.clitools import ROOT, cli_env, command, read_jsonl, write_prompts

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    RunCli = Callable[..., Awaitable[subprocess.CompletedProcess[str]]]

SUBCOMMANDS = ("demo", "batch", "bench", "health", "sim")


@pytest.mark.parametrize("name", ["", *SUBCOMMANDS])
def test_help_has_an_example_and_wraps_cleanly(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = {}
    for columns in (200, 60):
        monkeypatch.setenv("COLUMNS", str(columns))
        with pytest.raises(SystemExit) as info:
            main([name, "--help"] if name else ["--help"])
        assert info.value.code == 0
        texts[columns] = capsys.readouterr().out
    wide, narrow = texts[200], texts[60]
    if name:
        assert f"llmlb {name}" in wide.split("Examples:", 1)[1]
    # Narrow: no line wider than the terminal (the terminal would cut it anywhere) ...
    assert max(len(line) for line in narrow.splitlines()) <= 60, narrow
    # ... and no word broken in two: the same words in the same order at both widths.
    assert narrow.split() == wide.split()


async def test_one_default_fleet_for_every_command(tmp_path: Path, run_cli: RunCli) -> None:
    fleet = ["alpha", "beta", "gamma"]
    bench = await run_cli("bench", "--requests", "30", "--json")
    assert bench.returncode == 0, bench.stderr
    assert sorted(json.loads(bench.stdout)["providers"]) == fleet

    source = tmp_path / "in.jsonl"
    write_prompts(source, 3)
    out = tmp_path / "out.jsonl"
    batch = await run_cli("batch", str(source), "-o", str(out), "-q")
    assert batch.returncode == 0, batch.stderr
    assert read_jsonl(out)[0]["providers"] == fleet

    health = await run_cli("health")
    assert health.returncode == 0, health.stderr
    for name in fleet:
        assert f"{name} " in health.stdout
    assert "3/3 up" in health.stdout

    config = tmp_path / "sim.toml"
    sim = await start_sim(tmp_path, "--write-config", str(config))
    assert [p["name"] for p in tomllib.loads(config.read_text())["providers"]] == fleet
    assert sim.code == 130


class SimRun:
    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code = code
        self.stdout = stdout
        self.stderr = stderr


async def start_sim(tmp_path: Path, *args: str, probe: bool = False) -> SimRun:
    """Run ``llmlb sim ARGS`` until its config is out, optionally probe it, then Ctrl-C."""
    out_path, err_path = tmp_path / "sim.out", tmp_path / "sim.err"
    with out_path.open("wb") as out, err_path.open("wb") as err, trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            proc: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    command("sim", *args),
                    cwd=ROOT,
                    env=cli_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    check=False,
                )
            )
            while "Ctrl-C" not in err_path.read_text():
                await trio.sleep(0.02)
            if probe:
                config = tomllib.loads(out_path.read_text())
                url = config["providers"][0]["base_url"]
                async with httpx.AsyncClient() as client:
                    reply = await client.post(
                        url + "/chat/completions",
                        json={"model": "gpt-sim", "messages": [{"role": "user", "content": "hi"}]},
                    )
                assert reply.status_code == 200
            proc.send_signal(signal.SIGINT)
            code = await proc.wait()
    return SimRun(code, out_path.read_text(), err_path.read_text())


async def test_sim_stdout_is_a_config_and_ctrl_c_exits_130(tmp_path: Path) -> None:
    run = await start_sim(tmp_path, "--providers", "solo:openai", probe=True)
    assert run.code == 130
    config = tomllib.loads(run.stdout)  # nothing but the config on stdout
    assert config["providers"][0]["name"] == "solo"
    path = tmp_path / "solo.toml"
    path.write_text(run.stdout)
    assert llmlb.load_config(path).providers[0].name == "solo"  # loads as it is
    assert "1 provider on 127.0.0.1" in run.stderr  # singular
    assert "simulator stopped" in run.stderr
    assert "Traceback" not in run.stderr


async def test_sim_write_config_refuses_an_unusable_path(tmp_path: Path, run_cli: RunCli) -> None:
    done = await run_cli("sim", "--write-config", str(tmp_path / "nope" / "c.toml"))
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert "does not exist" in line


async def test_plurals(tmp_path: Path, run_cli: RunCli) -> None:
    source = tmp_path / "in.jsonl"
    write_prompts(source, 1)
    with source.open("a") as handle:
        handle.write('{"id": "typo", "promt": "hi"}\n')
    out = tmp_path / "out.jsonl"
    done = await run_cli("batch", str(source), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "1 answered, 0 failed, 1 bad input line," in done.stdout
    assert "1 of 2 input lines is bad" in done.stderr
    final = [line for line in done.stderr.splitlines() if line.startswith("batch: 2/2")]
    assert final
    assert final[-1].endswith(", 1 error")
