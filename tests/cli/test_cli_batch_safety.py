"""``llmlb batch`` protects money and data: one writer per output, resume only the same
job, stop on fatal errors, deadlines, and failure paths a person can read."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from collections import Counter
from functools import partial
from typing import TYPE_CHECKING

import trio

from llmlb_actors.cli import main
from llmlb_actors.sim import Behaviour, SimProvider, open_simulator
from tests.cli.clitools import (
    ROOT,
    SECRET,
    cli_env,
    command,
    read_jsonl,
    records_of,
    sim_entries,
    write_config,
    write_prompts,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    import pytest

    RunCli = Callable[..., Awaitable[subprocess.CompletedProcess[str]]]

KEY_ENV = cli_env(LLMLB_TEST_KEY=SECRET)


async def wait_for_results(path: Path, count: int) -> None:
    file = trio.Path(path)
    with trio.fail_after(30):
        while (
            not await file.exists() or (await file.read_bytes()).count(b'"type":"result"') < count
        ):
            await trio.sleep(0.02)


# -- item 1: one writer per output ------------------------------------------------------


async def test_a_second_run_on_the_same_output_is_refused(tmp_path: Path, run_cli: RunCli) -> None:
    """Two real processes on one output: the second exits 2 at once naming the holder;
    after the holder is killed with -9 the lock is gone and a rerun finishes the job."""
    slow = SimProvider(name="slow", protocol="openai", behaviour=Behaviour(latency=0.05))
    source = tmp_path / "in.jsonl"
    write_prompts(source, 200)
    out = tmp_path / "out.jsonl"
    async with open_simulator([slow]) as sim:
        config = write_config(tmp_path / "c.toml", sim_entries(sim, "slow"))
        args = ("batch", str(source), "-o", str(out), "--config", str(config))
        args += ("--concurrency", "2", "-q")
        async with trio.open_nursery() as nursery:
            first: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    command(*args),
                    cwd=ROOT,
                    env=KEY_ENV,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    check=False,
                )
            )
            await wait_for_results(out, 4)
            second = await run_cli(*args, env=KEY_ENV)
            assert first.returncode is None  # still running: the second did not stop it
            first.kill()
            assert await first.wait() == -signal.SIGKILL
        assert second.returncode == 2, second.stderr
        (line,) = second.stderr.splitlines()
        assert str(out) in line
        assert f"pid {first.pid}" in line
        assert "Traceback" not in second.stderr

        # kill -9 left no stale lock: the next run takes over and finishes (faster: the
        # concurrency is not part of the job's identity).
        third = await run_cli(*args, "--concurrency", "64", env=KEY_ENV)
        assert third.returncode == 0, third.stderr
    counts = Counter(r["id"] for r in records_of(out, "result"))
    assert set(counts) == {f"q{i}" for i in range(200)}
    assert set(counts.values()) == {1}  # nothing paid for twice


# -- item 2: a resume is the same job, or it is refused --------------------------------


async def test_resume_checks_the_job_identity(tmp_path: Path, run_cli: RunCli) -> None:
    source = tmp_path / "in.jsonl"
    write_prompts(source, 20)
    other = tmp_path / "other.jsonl"
    write_prompts(other, 5, start=100)
    out = tmp_path / "out.jsonl"

    first = await run_cli("batch", str(source), "-o", str(out), "-q")
    assert first.returncode == 0, first.stderr
    snapshot = out.read_bytes()

    # A finished job: nothing to do, and no new header.
    again = await run_cli("batch", str(source), "-o", str(out))
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout
    assert out.read_bytes() == snapshot

    # Another input into the same output: refused, the file untouched.
    wrong_input = await run_cli("batch", str(other), "-o", str(out))
    assert wrong_input.returncode == 2
    assert "input" in wrong_input.stderr
    assert str(other) in wrong_input.stderr
    assert "--force-resume" in wrong_input.stderr
    assert out.read_bytes() == snapshot

    # An earlier line edited: the consumed part of the input changed.
    lines = source.read_text().splitlines()
    lines[3] = json.dumps({"id": "q3", "prompt": "edited"})
    source.write_text("\n".join(lines) + "\n")
    edited = await run_cli("batch", str(source), "-o", str(out))
    assert edited.returncode == 2
    assert "changed" in edited.stderr
    assert out.read_bytes() == snapshot
    write_prompts(source, 20)  # back as it was

    # Lines appended to the input: the same job, grown; only the new ids are sent.
    with source.open("a") as handle:
        for i in (20, 21):
            handle.write(json.dumps({"id": f"q{i}", "prompt": f"question {i}"}) + "\n")
    grown = await run_cli("batch", str(source), "-o", str(out), "-q")
    assert grown.returncode == 0, grown.stderr
    assert len(records_of(out, "header")) == 2
    results = records_of(out, "result")
    assert [r["id"] for r in results[20:]] in (["q20", "q21"], ["q21", "q20"])
    assert len(results) == 22
    snapshot = out.read_bytes()

    # Forgetting --config the other way round: another set of providers answered before.
    answering = SimProvider(name="real", protocol="anthropic")
    async with open_simulator([answering]) as sim:
        config = write_config(tmp_path / "c.toml", sim_entries(sim, "real"))
        with source.open("a") as handle:
            handle.write(json.dumps({"id": "q22", "prompt": "one more"}) + "\n")
        args = ("batch", str(source), "-o", str(out), "--config", str(config))
        refused = await run_cli(*args, env=KEY_ENV)
        assert refused.returncode == 2
        (line,) = refused.stderr.splitlines()
        assert "providers" in line
        assert "simulator" in line
        assert str(config) in line
        assert out.read_bytes() == snapshot

        forced = await run_cli(*args, "--force-resume", "-q", env=KEY_ENV)
        assert forced.returncode == 0, forced.stderr
        assert records_of(out, "result")[-1]["provider"] == "real"
        assert len(records_of(out, "result")) == 23

        # --restart: start over, the old output kept as a backup.
        before = out.read_bytes()
        restarted = await run_cli(*args, "--restart", "-q", env=KEY_ENV)
        assert restarted.returncode == 0, restarted.stderr
        backup = tmp_path / "out.jsonl.bak"
        assert backup.read_bytes() == before
        assert str(backup) in restarted.stderr
        assert len(records_of(out, "header")) == 1
        results = records_of(out, "result")
        assert len(results) == 23
        assert {r["provider"] for r in results} == {"real"}


async def test_resume_without_config_after_a_config_run_is_refused(
    tmp_path: Path, run_cli: RunCli
) -> None:
    """The issue's case: a run against real providers, then the same command without
    --config must not quietly fill the rest with simulated answers."""
    async with open_simulator([SimProvider(name="real", protocol="openai")]) as sim:
        config = write_config(tmp_path / "c.toml", sim_entries(sim, "real"))
        source = tmp_path / "in.jsonl"
        write_prompts(source, 10)
        out = tmp_path / "out.jsonl"
        sim.script("real", ["ok"] * 5 + ["500"] * 20)
        args = ("batch", str(source), "-o", str(out), "--max-retries", "0", "-q")
        partly = await run_cli(*args, "--config", str(config), "--concurrency", "1", env=KEY_ENV)
        assert partly.returncode == 0, partly.stderr
        assert len(records_of(out, "result")) == 5
    snapshot = out.read_bytes()
    forgot = await run_cli(*args)
    assert forgot.returncode == 2
    assert "simulator" in forgot.stderr
    assert out.read_bytes() == snapshot


# -- item 3 (CLI side) and item 4: stop on fatal errors, warnings that fit a terminal ----


async def test_a_wrong_key_aborts_the_batch_in_one_line(tmp_path: Path, run_cli: RunCli) -> None:
    guarded = SimProvider(name="guarded", protocol="openai", api_key=SECRET)
    source = tmp_path / "in.jsonl"
    write_prompts(source, 500)
    out = tmp_path / "out.jsonl"
    async with open_simulator([guarded]) as sim:
        config = write_config(tmp_path / "c.toml", sim_entries(sim, "guarded"))
        done = await run_cli(
            "batch",
            str(source),
            "-o",
            str(out),
            "--config",
            str(config),
            "--concurrency",
            "4",
            env=cli_env(LLMLB_TEST_KEY="sk-wrong-key-123456"),
        )
        sent = sim.stats("guarded").requests
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    aborts = [line for line in done.stderr.splitlines() if "aborted" in line]
    assert len(aborts) == 1, done.stderr
    assert "All providers are out of rotation" in aborts[0]
    assert "[guarded] HTTP 401" in aborts[0]
    assert "rerun" in aborts[0]
    # Warnings for the same provider and reason are collapsed: a handful of lines, not 2,000.
    assert len(done.stderr.splitlines()) <= 8, done.stderr
    # The last progress line tells the truth: nothing was retried (nobody was left to ask).
    progress = [line for line in done.stderr.splitlines() if line.startswith("batch: ")]
    assert ", 0 retries, " in progress[-1]
    # Stopped at once: the first wave of --concurrency requests, each asked once.
    assert sent <= 4
    errors = records_of(out, "error")
    assert 1 <= len(errors) <= 4
    assert all(e["attempts"] <= 1 for e in errors)
    assert not records_of(out, "result")
    assert SECRET not in done.stdout + done.stderr + out.read_text()


async def test_max_errors_and_resume_after_the_abort(tmp_path: Path, run_cli: RunCli) -> None:
    broken = SimProvider(name="broken", protocol="openai", behaviour=Behaviour(faults={"500": 1}))
    source = tmp_path / "in.jsonl"
    write_prompts(source, 200)
    out = tmp_path / "out.jsonl"
    async with open_simulator([broken]) as sim:
        config = write_config(tmp_path / "c.toml", sim_entries(sim, "broken"))
        args = ("batch", str(source), "-o", str(out), "--config", str(config))
        args += ("--concurrency", "8", "--max-retries", "0")
        aborted = await run_cli(*args, "--max-errors", "10", env=KEY_ENV)
        assert aborted.returncode == 1, aborted.stderr
        assert "aborted after 10 failed prompts in a row" in aborted.stderr
        errors = records_of(out, "error")
        assert len(errors) == 10  # the run stops at the tenth, and writes no more
        assert all(e["attempts"] == 1 for e in errors)  # --max-retries 0
        # Sent: the ten, and at most the other requests in flight when the tenth came
        # in (7 at --concurrency 8); nothing is sent once the stop is decided.
        assert sim.stats("broken").requests <= 10 + 8 - 1

        sim.set_behaviour("broken", Behaviour())  # fixed upstream: the resume answers all
        resumed = await run_cli(*args, "-q", env=KEY_ENV)
        assert resumed.returncode == 0, resumed.stderr
    counts = Counter(r["id"] for r in records_of(out, "result"))
    assert set(counts) == {f"q{i}" for i in range(200)}
    assert set(counts.values()) == {1}


async def test_a_dead_server_stops_the_batch(tmp_path: Path, run_cli: RunCli) -> None:
    """The issue's refused port (it ground on for 14 s, 800 connection attempts, exit 0): a
    refused connection may heal, so it is retried, but --max-errors failed prompts in a row
    stop the batch, exit 1, with one line that says why."""
    with socket.socket() as sock:  # bound, then released: connecting is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = {
        "name": "dead",
        "provider": "openai-compatible",
        "model": "m",
        "base_url": f"http://127.0.0.1:{port}/v1",
        "api_key_required": False,
    }
    config = write_config(tmp_path / "c.toml", [dead], retry_delay=0.01)
    source = tmp_path / "in.jsonl"
    write_prompts(source, 500)
    out = tmp_path / "out.jsonl"
    args = ("batch", str(source), "-o", str(out), "--config", str(config))
    done = await run_cli(*args, "--concurrency", "4", "--max-errors", "5", "--max-retries", "1")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    aborts = [line for line in done.stderr.splitlines() if "aborted" in line]
    assert len(aborts) == 1, done.stderr
    assert "aborted after 5 failed prompts in a row" in aborts[0]
    assert "connection refused" in aborts[0]
    errors = records_of(out, "error")
    assert 5 <= len(errors) <= 5 + 4  # at most the in-flight wave after the fifth
    assert all(1 <= e["attempts"] <= 2 for e in errors)  # --max-retries 1
    assert not records_of(out, "result")


# -- item 5: deadlines ----------------------------------------------------------------------


async def test_timeout_and_max_retries_flags(tmp_path: Path, run_cli: RunCli) -> None:
    hung = SimProvider(name="hung", protocol="openai", behaviour=Behaviour(faults={"hang": 1}))
    source = tmp_path / "in.jsonl"
    write_prompts(source, 3)
    out = tmp_path / "out.jsonl"
    async with open_simulator([hung]) as sim:
        config = write_config(tmp_path / "c.toml", sim_entries(sim, "hung"))
        start = trio.current_time()
        done = await run_cli(
            "batch",
            str(source),
            "-o",
            str(out),
            "--config",
            str(config),
            "--timeout",
            "0.3",
            "-q",
            env=KEY_ENV,
            timeout=20,
        )
        elapsed = trio.current_time() - start
        bench = await run_cli(
            "bench",
            "--config",
            str(config),
            "--requests",
            "4",
            "--timeout",
            "0.3",
            "--max-retries",
            "0",
            "--json",
            env=KEY_ENV,
            timeout=20,
        )
    assert done.returncode == 0, done.stderr
    errors = records_of(out, "error")
    assert len(errors) == 3
    assert all("timed out after 0.3s" in e["error"]["message"] for e in errors)
    assert elapsed < 15  # not 3 x 4 x 30 s
    assert bench.returncode == 0, bench.stderr
    assert json.loads(bench.stdout)["failed"] == 4


# -- item 7: exit codes and messages --------------------------------------------------------


def test_unusable_paths_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In-process through the entry point (``main`` is what the console script runs):
    the checks happen before anything starts."""
    source = tmp_path / "in.jsonl"
    write_prompts(source, 2)
    directory = tmp_path / "somedir"
    directory.mkdir()
    cases = {
        (str(source), str(directory)): "is a directory",
        (str(source), str(tmp_path / "nope" / "x.jsonl")): "does not exist",
        (str(directory), str(tmp_path / "o.jsonl")): "is a directory",
        (str(tmp_path / "missing.jsonl"), str(tmp_path / "o.jsonl")): "does not exist",
    }
    for (input_path, output_path), expected in cases.items():
        assert main(["batch", input_path, "-o", output_path]) == 2, (input_path, output_path)
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith("llmlb batch: error: ")
        assert expected in line
    assert not (tmp_path / "o.jsonl").exists()


async def test_an_unusable_output_from_the_command_line(tmp_path: Path, run_cli: RunCli) -> None:
    source = tmp_path / "in.jsonl"
    write_prompts(source, 2)
    done = await run_cli("batch", str(source), "-o", str(tmp_path))
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()  # one line, no traceback
    assert "is a directory" in line


def bad_input(path: Path) -> None:
    lines = [json.dumps({"id": "good", "prompt": "hi"})]
    lines += [json.dumps({"id": f"typo{i}", "promt": "hello"}) for i in range(8)]
    lines += ["not json", json.dumps({"id": "hot", "prompt": "x", "temperature": 9})]
    path.write_text("\n".join(lines) + "\n")


async def test_bad_lines_are_shown_with_the_valid_keys(tmp_path: Path, run_cli: RunCli) -> None:
    source = tmp_path / "in.jsonl"
    bad_input(source)
    out = tmp_path / "out.jsonl"
    done = await run_cli("batch", str(source), "-o", str(out))
    assert done.returncode == 0, done.stderr
    err = done.stderr
    assert "10 of 11 input lines are bad" in err
    assert "line 2: unknown field 'promt'" in err
    assert "valid keys: id, prompt, messages, system" in err
    assert "line 6:" in err  # the first five are shown ...
    assert "line 7:" not in err  # ... then a count
    assert "and 5 more" in err
    assert "--strict" in err
    error_lines = records_of(out, "error")
    assert len(error_lines) == 10
    typo = next(e for e in error_lines if e["line"] == 2)
    assert "valid keys: id, prompt, messages" in typo["error"]["message"]


async def test_strict_refuses_bad_lines_before_sending(tmp_path: Path, run_cli: RunCli) -> None:
    source = tmp_path / "in.jsonl"
    bad_input(source)
    out = tmp_path / "out.jsonl"
    async with open_simulator([SimProvider(name="one", protocol="openai")]) as sim:
        config = write_config(tmp_path / "c.toml", sim_entries(sim, "one"))
        args = ("batch", str(source), "-o", str(out), "--config", str(config), "--strict")
        done = await run_cli(*args, env=KEY_ENV)
        assert sim.stats("one").requests == 0
    assert done.returncode == 2
    assert "10 of 11 input lines are bad" in done.stderr
    assert "line 2: unknown field 'promt'" in done.stderr
    assert not out.exists()
    assert "Traceback" not in done.stderr


async def test_resume_of_an_old_output_without_identity_still_works(
    tmp_path: Path, run_cli: RunCli
) -> None:
    """An output written before job identity existed has no input hash: resume it."""
    source = tmp_path / "in.jsonl"
    write_prompts(source, 3)
    out = tmp_path / "out.jsonl"
    old_header = {
        "type": "header",
        "version": "0.1.0",
        "started": "2026-01-01T00:00:00+00:00",
        "input": str(source),
        "target": "simulator",
        "config_hash": "sha256:0000000000000000",
        "strategy": "round-robin",
        "seed": 1,
        "concurrency": 64,
        "ordered": False,
        "providers": ["alpha", "beta", "gamma"],
        "already_answered": 0,
        "to_do": 3,
    }
    out.write_text(json.dumps(old_header) + "\n")
    done = await run_cli("batch", str(source), "-o", str(out), "-q")
    assert done.returncode == 0, done.stderr
    assert len(records_of(out, "result")) == 3
    assert read_jsonl(out)[0] == old_header
