"""Power of two choices: pick two distinct candidates at random and keep the lighter.

Random pairs avoid the herding of "always the least loaded" (every caller piles
onto the same provider until its load catches up), and comparing two is enough to
steer most traffic away from a slow or busy provider (Mitzenmacher; Envoy's
``least_request``, Finagle's ``p2c``). With equal loads the first of the pair wins,
and since the pair is uniform, so is the pick. Pure: the caller passes the
candidates (already filtered to the admissible ones), the load function and the
random source.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Sequence

__all__ = ["power_of_two_choices"]

T = TypeVar("T")


def power_of_two_choices(
    candidates: Sequence[T], load: Callable[[T], float], rng: random.Random
) -> T:
    """The lighter of two distinct random candidates (the only one, if there is one).

    ``candidates`` must be non-empty; ``load`` is called at most twice.
    """
    n = len(candidates)
    if n == 1:
        return candidates[0]
    i = rng.randrange(n)
    j = rng.randrange(n - 1)
    if j >= i:
        j += 1
    first, second = candidates[i], candidates[j]
    return second if load(second) < load(first) else first
