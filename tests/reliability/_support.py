"""Shared checks for the reliability suite: error classification, live tasks, memory.

The classification table here is written out independently of
``providers/_http.py`` on purpose: a test that derived its expectations from
the code under test could not catch that code being wrong.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio
import trio.lowlevel

from llmlb_actors._errors import LLMError, LoadBalancerError

if TYPE_CHECKING:
    from collections.abc import Iterable

RETRYABLE_STATUSES = frozenset({408, 409, 429, *range(500, 600)})
DISABLING_STATUSES = frozenset({401, 403, 404})
KINDS = frozenset(
    {"http", "timeout", "connection", "tls", "proxy", "protocol", "crash", "cancelled", "provider"}
)
# Failures with no HTTP status that say nothing against the request itself.
ALWAYS_RETRYABLE_KINDS = frozenset({"timeout", "connection", "crash"})


def classification_problems(error: LLMError, *, secret: str | None = None) -> list[str]:
    """Why ``error`` is mis-classified (empty when it is right)."""
    problems: list[str] = []
    where = f"{error!r}"
    if error.kind not in KINDS:
        problems.append(f"unknown kind: {where}")
    if not error.provider:
        problems.append(f"no provider named: {where}")
    if error.status is not None:
        if error.kind != "http":
            problems.append(f"a status but kind {error.kind}: {where}")
        retryable = error.status in RETRYABLE_STATUSES
        disables = error.status in DISABLING_STATUSES
        if error.retryable != retryable or error.disables_provider != disables:
            problems.append(f"status {error.status} classified wrong: {where}")
    if error.kind in ALWAYS_RETRYABLE_KINDS and not error.retryable:
        problems.append(f"{error.kind} must be retryable: {where}")
    if secret is not None and secret in f"{error} {error!r} {error.partial_text}":
        problems.append("the API key leaked into an error")
    return problems


def balancer_error_problems(exc: LoadBalancerError, *, secret: str | None = None) -> list[str]:
    """Classification problems of every attempt of a failed request, plus its own message."""
    problems: list[str] = []
    for error in exc.errors:
        if not isinstance(error, LLMError):
            problems.append(f"a non-LLMError attempt error: {error!r}")
            continue
        problems += classification_problems(error, secret=secret)
    if secret is not None and secret in str(exc):
        problems.append("the API key leaked into a LoadBalancerError")
    return problems


def _walk(task: trio.lowlevel.Task, out: list[trio.lowlevel.Task]) -> None:
    out.append(task)
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            _walk(child, out)


def library_tasks(exclude: Iterable[str] = ("/llmlb_actors/sim/",)) -> list[str]:
    """Names of live tasks whose coroutine is library code (the simulator excluded)."""
    tasks: list[trio.lowlevel.Task] = []
    root = trio.lowlevel.current_root_task()
    assert root is not None
    _walk(root, tasks)
    skip = tuple(exclude)
    found: list[str] = []
    for task in tasks:
        code = getattr(task.coro, "cr_code", None)
        filename = code.co_filename if code is not None else ""
        if "/llmlb_actors/" in filename and not any(part in filename for part in skip):
            found.append(task.name)
    return found


def rss_bytes() -> tuple[int, int]:
    """(current RSS, peak RSS) of this process, in bytes, from /proc/self/status."""
    current = peak = 0
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                current = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    return current, peak
