"""Shared fixtures. Simulator fixtures start the server in the test's own trio run."""

from __future__ import annotations

import random


class ZeroJitter(random.Random):
    """A Random whose ``random()`` is always 0: backoff waits hit their exact upper bound."""

    def random(self) -> float:
        return 0.0


# -- hypothesis profiles (tests/reliability): HYPOTHESIS_PROFILE=soak for long runs ------------
import os  # noqa: E402

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "soak", max_examples=5000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# -- no proxy from the machine's environment ----------------------------------------------------
import pytest  # noqa: E402

_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def _no_proxy_from_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both transports honour HTTPS_PROXY and friends (trust_env): a CI machine behind a
    proxy must not route the suite's loopback traffic through it. Tests that want a
    proxy set the variables themselves."""
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
