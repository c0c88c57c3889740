"""``llmlb batch`` end to end: formats, bad lines, resume after Ctrl-C and ``kill -9``."""

from __future__ import annotations

import json
import signal
import subprocess
from collections import Counter
from functools import partial
from typing import TYPE_CHECKING

import trio

from llmlb_actors.sim import Behaviour, SimProvider, open_simulator
from tests.cli.clitools import (
    ROOT,
    SECRET,
    cli_env,
    command,
    read_jsonl,
    write_config,
    write_prompts,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    RunCli = Callable[..., Awaitable[subprocess.CompletedProcess[str]]]


def bad_lines() -> list[str]:
    return [
        "this is not json",
        json.dumps({"id": "no-prompt"}),
        json.dumps({"id": "typo", "promt": "hello"}),
        json.dumps({"id": "q3", "prompt": "the same id again"}),
        json.dumps({"id": "hot", "prompt": "x", "temperature": 9}),
    ]


async def test_formats_bad_lines_and_rerun(tmp_path: Path, run_cli: RunCli) -> None:
    source = tmp_path / "in.jsonl"
    write_prompts(source, 30)
    with source.open("a") as handle:
        handle.write("\n".join(bad_lines()) + "\n\n")  # the blank line is ignored
        handle.write(
            json.dumps(
                {
                    "messages": [{"role": "user", "content": "hi"}],
                    "system": "be brief",
                    "max_tokens": 20,
                    "stop": "\n",
                    "meta": {"expected": "hello", "tags": [1, 2]},
                }
            )
            + "\n"
        )
    out = tmp_path / "out.jsonl"
    args = ("batch", str(source), "-o", str(out), "--seed", "11", "--ordered")

    first = await run_cli(*args)
    assert first.returncode == 0, first.stderr
    records = read_jsonl(out)
    header, *rest = records
    assert header["type"] == "header"
    assert header["seed"] == 11
    assert header["strategy"] == "round-robin"
    assert header["target"] == "simulator"
    assert header["config_hash"].startswith("sha256:")
    assert header["ordered"] is True
    assert header["already_answered"] == 0
    assert header["to_do"] == 36
    assert header["providers"] == ["alpha", "beta", "gamma"]

    results = [r for r in rest if r["type"] == "result"]
    errors = [r for r in rest if r["type"] == "error"]
    assert len(results) == 31
    assert len(errors) == 5
    # --ordered: every record in input-line order.
    assert [r["line"] for r in rest] == sorted(r["line"] for r in rest)
    assert [r["id"] for r in results[:30]] == [f"q{i}" for i in range(30)]
    for r in results:
        assert set(r) >= {
            "id",
            "line",
            "provider",
            "model",
            "content",
            "finish_reason",
            "usage",
            "latency",
            "attempts",
        }
        assert r["provider"] in ("alpha", "beta", "gamma")
        assert r["content"].startswith("Simulated reply from")
        assert r["finish_reason"] in ("stop", "length")
        assert r["attempts"] == 1
        assert r["usage"]["total_tokens"] > 0
    messages_line = results[30]
    assert messages_line["id"] == 37  # no id: the line number stands in
    assert messages_line["meta"] == {"expected": "hello", "tags": [1, 2]}
    assert "meta" not in results[0]

    by_line = {e["line"]: e for e in errors}
    assert set(by_line) == {31, 32, 33, 34, 35}
    assert all(e["error"]["type"] == "InputError" for e in errors)
    assert "malformed" in by_line[31]["error"]["message"]
    assert by_line[31]["id"] is None
    assert by_line[32]["id"] == "no-prompt"
    assert "prompt" in by_line[32]["error"]["message"]
    assert "promt" in by_line[33]["error"]["message"]
    assert "duplicate id 'q3' (first on line 4)" in by_line[34]["error"]["message"]
    assert "temperature" in by_line[35]["error"]["message"]
    assert all(e["error"]["message"].startswith(f"line {n}:") for n, e in by_line.items())

    assert "31 answered, 0 failed, 5 bad input lines" in first.stdout
    for name in ("alpha", "beta", "gamma"):
        assert name in first.stdout
    # Not a terminal: plain progress lines on stderr, no rich bar.
    assert "batch: 36/36 (100%)" in first.stderr

    # Rerun of a finished job: nothing is sent and the file is not touched.
    before = out.read_bytes()
    again = await run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout
    assert out.read_bytes() == before


async def wait_for_results(path: Path, count: int) -> None:
    """Poll the output file until it holds ``count`` result lines (a subprocess is writing)."""
    file = trio.Path(path)
    with trio.fail_after(30):
        while (
            not await file.exists() or (await file.read_bytes()).count(b'"type":"result"') < count
        ):
            await trio.sleep(0.02)


async def test_ctrl_c_then_kill_9_then_resume(tmp_path: Path) -> None:
    """Every id is answered exactly once across three runs, and the file stays valid JSONL."""
    sim_provider = SimProvider(
        name="sim",
        protocol="openai",
        api_key=SECRET,
        # A reply that contains the key: the output must still not.
        behaviour=Behaviour(latency=0.02, reply=f"leaked {SECRET} here"),
    )
    source = tmp_path / "prompts.jsonl"
    write_prompts(source, 300)
    out = tmp_path / "answers.jsonl"
    async with open_simulator([sim_provider]) as sim:
        config = write_config(
            tmp_path / "config.toml",
            [
                {
                    "name": "sim",
                    "provider": "openai",
                    "model": "gpt-sim",
                    "base_url": sim.base_url("sim"),
                    "api_key_env": "LLMLB_TEST_KEY",
                }
            ],
            health_check_interval=5.0,
        )
        env = cli_env(LLMLB_TEST_KEY=SECRET)
        args = command(
            "batch", str(source), "-o", str(out), "--config", str(config), "--concurrency", "4"
        )

        async def run_until(results: int, stop: Callable[[trio.Process], None]) -> tuple[int, str]:
            """Start a run, wait for ``results`` result lines, ``stop`` it; (status, stderr)."""
            errors = tmp_path / "stderr.txt"
            with errors.open("wb") as err_file, trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    proc: trio.Process = await nursery.start(
                        partial(
                            trio.run_process,
                            args,
                            cwd=ROOT,
                            env=env,
                            stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL,
                            stderr=err_file,
                            check=False,
                        )
                    )
                    await wait_for_results(out, results)
                    stop(proc)
                    code = await proc.wait()
            return code, errors.read_text()

        # Each run is stopped while requests are still in flight, however slowly this
        # test gets to stop it: past a given number of answers the simulator holds every
        # request (a "hang" never answers) until the run is interrupted.
        def answer_then_hold(answers: int) -> None:
            sim.clear_script("sim")
            sim.script("sim", ["ok"] * answers + ["hang"] * 300)

        # Run 1: Ctrl-C after some answers.
        answer_then_hold(25)
        code, stderr = await run_until(20, lambda proc: proc.send_signal(signal.SIGINT))
        assert code == 130, stderr
        assert "interrupted; rerun the same command to resume" in stderr
        assert "Traceback" not in stderr
        after_interrupt = read_jsonl(out)
        answered_1 = [r for r in after_interrupt if r["type"] == "result"]
        assert 20 <= len(answered_1) <= 25

        # Run 2: kill -9 in the middle.
        answer_then_hold(40)
        code, _ = await run_until(len(answered_1) + 30, lambda proc: proc.kill())
        assert code == -signal.SIGKILL
        after_kill = read_jsonl(out)  # still whole lines only
        answered_2 = [r for r in after_kill if r["type"] == "result"]
        assert len(answered_1) + 30 <= len(answered_2) <= len(answered_1) + 40
        assert after_kill[: len(after_interrupt)] == after_interrupt

        # Run 3: finishes the rest.
        sim.clear_script("sim")
        with trio.fail_after(60):
            final_run = await trio.run_process(
                args, cwd=ROOT, env=env, capture_stdout=True, capture_stderr=True, check=False
            )
        stdout, stderr = final_run.stdout.decode(), final_run.stderr.decode()
        assert final_run.returncode == 0, stderr
        assert sim.stats("sim").outcomes.get("401", 0) == 0  # the key reached the simulator

    final = read_jsonl(out)
    headers = [r for r in final if r["type"] == "header"]
    results = [r for r in final if r["type"] == "result"]
    assert len(headers) == 3
    assert headers[1]["already_answered"] == len(answered_1)
    assert headers[2]["already_answered"] == len(answered_2)
    assert headers[0]["config_hash"] == headers[2]["config_hash"]
    assert headers[0]["target"] == str(config)
    counts = Counter(r["id"] for r in results)
    assert set(counts) == {f"q{i}" for i in range(300)}
    assert set(counts.values()) == {1}
    assert not [r for r in final if r["type"] == "error"]
    assert all(r["content"] == "leaked *** here" for r in results)
    for text in (out.read_text(), stdout, stderr):
        assert SECRET not in text


async def test_torn_last_line_is_repaired_and_foreign_files_refused(
    tmp_path: Path, run_cli: RunCli
) -> None:
    source = tmp_path / "in.jsonl"
    write_prompts(source, 5)
    out = tmp_path / "out.jsonl"
    # What a power cut mid-write leaves: whole records, then half of one.
    whole = {"type": "result", "id": "q0", "line": 1, "provider": "x", "model": "m"}
    out.write_text(json.dumps(whole) + "\n" + '{"type": "result", "id": "q1", "li')
    done = await run_cli("batch", str(source), "-o", str(out), "-q")
    assert done.returncode == 0, done.stderr
    records = read_jsonl(out)
    assert records[0] == whole
    assert sorted(r["id"] for r in records if r["type"] == "result") == [f"q{i}" for i in range(5)]
    assert "q0" not in {r["id"] for r in records[1:] if r["type"] == "result"}
    assert "batch:" not in done.stderr  # --quiet

    # The input file given as output (or any non-llmlb JSONL) is refused untouched.
    before = source.read_bytes()
    refused = await run_cli("batch", str(out), "-o", str(source))
    assert refused.returncode == 2
    assert "not a llmlb batch record" in refused.stderr
    assert source.read_bytes() == before
    missing = await run_cli("batch", str(tmp_path / "nope.jsonl"), "-o", str(out))
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr
