"""Every ``examples/*.py`` runs as a user would run it, and says what it should.

Each example is its own process (``sys.executable``, a scratch working
directory, warnings as errors) against the in-process simulator: no keys, no
network. The processes start together so the whole module costs about as much
as the slowest example.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
TIMEOUT = 60.0

EXPECTED: dict[str, list[str]] = {
    "agent_tools.py": [
        "  step 1: openai  finish=tool_calls",
        "    ran get_weather({'city': 'sim-city'}) -> {'city': 'sim-city', 'celsius': 21}",
        "  step 2: claude  finish=stop",
        '  answer: Simulated reply from claude to: {"city": "sim-city", "celsius": 21}',
        "  step 1: gemini  finish=tool_calls",
        "  step 2: openai  finish=stop",
        "failover: the first provider goes down between the two steps",
        "    (openai is down)\n  step 2: claude  finish=stop",
    ],
    "custom_provider.py": [
        "What is 10 / 4?  -> calculator attempts=1 '10 / 4 = 2.5'",
        "What is 3 * 3?   -> openai     attempts=2",
        "streamed by calculator '1.5 * 4 = 6'",
        "health: {'openai': True, 'calculator': True}",
        "calculator: 3 ok, 1 failed",
    ],
    "custom_strategy.py": [
        "one at a time:       {'budget': 4}",
        "budget answers 503: answered by standard in 2 attempts",
        "estimated cost: $",
    ],
    "fastapi_app.py": [
        "POST /v1/chat -> claude after 2 attempts",
        "POST /v1/chat/stream -> 'Simulated reply from openai to: A story'",
        "temperature 7 -> HTTP 422",
        "GET /v1/health -> {'openai': True, 'claude': True}",
        "totals: 2 requests, 2 succeeded",
    ],
    "failover.py": [
        "healthy primary:                 answered by claude after 1 attempt(s)",
        "primary overloaded once:         answered by gemini after 2 attempt(s)",
        "claude circuit: open",
        "primary back after cooldown:     answered by claude after 1 attempt(s)",
    ],
    "latency.py": [
        "health: {'us-east': True, 'eu-west': True, 'ap-south': True}",
        "phase 1, us-east fastest:",
        "phase 2, us-east slowed to 1 s:",
    ],
    "least_busy.py": ["fast   ( 10 ms):", "slow   (150 ms):"],
    "round_robin.py": [
        "request 1: openai  gpt-sim",
        "request 2: claude  claude-sim",
        "request 3: gemini  gemini-sim",
        "request 4: openai",
        "stream from openai: 'Simulated reply from openai to: Stream a short story'",
        "openai: 3 answered",
    ],
    "weighted.py": [
        "requests  1-6 : big medium big small medium big",
        "share per provider: {'big': 6, 'medium': 4, 'small': 2}",
    ],
}


class Finished(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def test_every_strategy_and_the_custom_provider_have_an_example() -> None:
    names = {path.name for path in EXAMPLES}
    assert set(EXPECTED) <= names, sorted(set(EXPECTED) - names)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Finished]]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        for path in EXAMPLES:
            cwd = tmp_path_factory.mktemp(path.stem)
            procs[path.name] = subprocess.Popen(
                [sys.executable, "-W", "error", str(path)],
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        finished = {}
        for name, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=TIMEOUT)
            finished[name] = Finished(proc.returncode, stdout, stderr)
        yield finished
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_and_prints_what_it_should(runs: dict[str, Finished], path: Path) -> None:
    result = runs[path.name]
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "Exception ignored" not in result.stderr
    assert result.stdout.strip(), "an example must print something"
    for line in EXPECTED.get(path.name, []):
        assert line in result.stdout, f"{line!r} not in:\n{result.stdout}"
