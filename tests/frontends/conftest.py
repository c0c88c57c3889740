"""Every front-end test leaves no balancer or simulator thread behind."""

from __future__ import annotations

import gc
import threading
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

_OURS = ("llmlb-balancer", "llmlb-simulator")


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    gc.collect()  # a sync balancer dropped without close() stops when collected
    for thread in set(threading.enumerate()) - before:
        if thread.name in _OURS:
            thread.join(10)
            assert not thread.is_alive(), f"{thread.name} still running after the test"
