"""Suite-wide settings: hypothesis profiles (HYPOTHESIS_PROFILE=soak for long runs).

Test helpers live in modules (``llmlb_actors.testing``, ``tests.<dir>.<module>``),
never here: nothing imports from a conftest.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

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
