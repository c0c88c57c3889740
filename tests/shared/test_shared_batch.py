"""``llmlb batch --shard K/N [--shared-state URL]``: N processes, each id answered once.

The shard of an id is a stable hash of the id, so it does not depend on line order;
the shards' outputs concatenated are one valid (resumable) output file.
"""

from __future__ import annotations

import json
import random
import subprocess
from typing import TYPE_CHECKING

import pytest

from llmlb_actors._cli.shard import Shard, parse_shard
from tests.cli.clitools import ROOT, cli_env, command, read_jsonl

if TYPE_CHECKING:
    from pathlib import Path

    from tests.shared.conftest import RedisServer


def test_every_id_belongs_to_exactly_one_shard() -> None:
    ids = [f"q{i}" for i in range(2000)] + [str(i) for i in range(500)]
    for n in (1, 2, 3, 7):
        owners = [[k for k in range(1, n + 1) if Shard(k, n).owns(i)] for i in ids]
        assert all(len(o) == 1 for o in owners)
        sizes = [sum(o == [k] for o in owners) for k in range(1, n + 1)]
        assert min(sizes) > len(ids) / n * 0.8  # roughly even


@pytest.mark.parametrize("text", ["0/3", "4/3", "1/0", "a/b", "3", "1/-2", ""])
def test_bad_shards(text: str) -> None:
    with pytest.raises(ValueError, match="K/N"):
        parse_shard(text)


def _batch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command("batch", *args, "--quiet"),
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _ids(path: Path) -> list[str]:
    return [str(r["id"]) for r in read_jsonl(path) if r.get("type") == "result"]


def test_shards_split_a_batch_and_share_budgets(tmp_path: Path, redis_server: RedisServer) -> None:
    prompts = [{"id": f"q{i}", "prompt": f"question {i}"} for i in range(40)]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(p) + "\n" for p in prompts))
    outs = [tmp_path / f"out.{k}-of-3.jsonl" for k in (1, 2, 3)]
    for k, out in enumerate(outs, 1):
        done = _batch(
            str(source), "-o", str(out), "--shard", f"{k}/3", "--shared-state", redis_server.url
        )
        assert done.returncode == 0, done.stderr
        assert "left to other shards (shard" in done.stdout
    answered = [set(_ids(out)) for out in outs]
    assert all(answered)
    assert sum(len(a) for a in answered) == 40  # disjoint...
    assert set().union(*answered) == {p["id"] for p in prompts}  # ...and complete
    # The budgets were Redis's: the providers' windows are there.
    assert "llmlb:{alpha}:w" in redis_server.command("--scan").split()

    # Line order does not move an id to another shard.
    shuffled = tmp_path / "shuffled.jsonl"
    lines = source.read_text().splitlines(keepends=True)
    random.Random(5).shuffle(lines)
    shuffled.write_text("".join(lines))
    again = tmp_path / "again.jsonl"
    assert _batch(str(shuffled), "-o", str(again), "--shard", "2/3").returncode == 0
    assert set(_ids(again)) == answered[1]

    # The documented merge: the shards' files concatenated are one output a rerun resumes.
    merged = tmp_path / "merged.jsonl"
    merged.write_text("".join(out.read_text() for out in outs))
    rerun = _batch(str(source), "-o", str(merged))
    assert rerun.returncode == 0, rerun.stderr
    assert len(_ids(merged)) == 40  # nothing was answered twice


def test_a_malformed_shared_state_url_stops_the_batch(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": 1, "prompt": "x"}) + "\n")
    done = _batch(
        str(source), "-o", str(tmp_path / "o.jsonl"), "--shared-state", "redis://:pw-9@h:70000"
    )
    assert done.returncode != 0
    assert "pw-9" not in done.stdout + done.stderr
    assert "shared_state" in done.stdout + done.stderr
