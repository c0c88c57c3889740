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
