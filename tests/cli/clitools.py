"""Helpers for the ``llmlb`` end-to-end tests: each runs ``python -m llmlb_actors``
in a subprocess from the source tree, against the simulator."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

ROOT = Path(__file__).resolve().parents[2]
SECRET = "sk-llmlb-TESTSECRET-7f3a9c"
"""A recognisable key: no output of any command may contain it."""


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMLB_")}
    env.pop("COLUMNS", None)
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "llmlb_actors", *args]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every line of ``path`` parsed; fails the test if any line is not whole JSON."""
    data = path.read_bytes()
    assert data.endswith(b"\n"), "the last line is torn"
    return [json.loads(line) for line in data.splitlines()]


def write_prompts(path: Path, n: int, *, start: int = 0) -> None:
    with path.open("w") as handle:
        for i in range(start, start + n):
            handle.write(json.dumps({"id": f"q{i}", "prompt": f"question {i}"}) + "\n")


def _toml(value: Any) -> str:
    if isinstance(value, dict):  # an inline table: TOML's `=`, not JSON's `:`
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def write_config(path: Path, providers: Sequence[dict[str, Any]], **top: Any) -> Path:
    """A TOML config (the CLI reads the same files users write)."""
    lines = [f"{k} = {_toml(v)}" for k, v in top.items()]
    for provider in providers:
        lines.append("[[providers]]")
        lines += [f"{k} = {_toml(v)}" for k, v in provider.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def sim_entries(sim: Any, *names: str, key_env: str = "LLMLB_TEST_KEY") -> list[dict[str, Any]]:
    """``[[providers]]`` entries pointing at providers of a running simulator; the key is
    read from ``key_env`` (run the CLI with ``cli_env(LLMLB_TEST_KEY=...)``)."""
    entries = []
    for name in names:
        entry: dict[str, Any] = {
            "name": name,
            "provider": sim.provider(name).protocol,
            "model": sim.provider(name).model_id,
            "base_url": sim.base_url(name),
        }
        entry["api_key_env"] = key_env
        entries.append(entry)
    return entries


def records_of(path: Path, kind: str) -> list[dict[str, Any]]:
    return [r for r in read_jsonl(path) if r["type"] == kind]
