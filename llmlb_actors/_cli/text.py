"""Small text helpers of the ``llmlb`` command's output. Strictly private."""

from __future__ import annotations

__all__ = ["duration", "plural"]


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``1 error``, ``2 errors``; ``plural(n, "retry", "retries")``."""
    word = singular if count == 1 else (plural_form or singular + "s")
    return f"{count} {word}"


def duration(seconds: float) -> str:
    """``42s``, ``7m20s``, ``2h05m``: short enough for a progress line."""
    whole = round(max(seconds, 0.0))
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
