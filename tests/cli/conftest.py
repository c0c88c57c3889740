"""The ``run_cli`` fixture: ``await run_cli("batch", ...)`` runs ``python -m llmlb_actors``."""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

import pytest
import trio

from tests.cli.clitools import ROOT, cli_env, command

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


@pytest.fixture
def run_cli() -> Callable[..., Awaitable[subprocess.CompletedProcess[str]]]:
    """``await run_cli("batch", ..., env=...)``: run to completion, capture text output."""

    async def run(
        *args: str, env: dict[str, str] | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        with trio.fail_after(timeout):
            done = await trio.run_process(
                command(*args),
                cwd=ROOT,
                env=env or cli_env(),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        return subprocess.CompletedProcess(
            done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
        )

    return run
