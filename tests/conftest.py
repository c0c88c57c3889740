"""Shared fixtures. Simulator fixtures start the server in the test's own trio run."""

from __future__ import annotations

import random


class ZeroJitter(random.Random):
    """A Random whose ``random()`` is always 0: backoff waits hit their exact upper bound."""

    def random(self) -> float:
        return 0.0
