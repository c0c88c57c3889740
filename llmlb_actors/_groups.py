"""Exception groups at the public edge: callers of the facade never see one."""

from __future__ import annotations

import trio

__all__ = ["collapse_group"]


def collapse_group(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception to raise for a nursery's group.

    Cancellation and Ctrl-C win (they must propagate); otherwise the first
    leaf in order. A group is returned only if it holds no leaf at all.
    """
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(reversed(exc.exceptions))
        else:
            leaves.append(exc)
    for exc in leaves:
        if isinstance(exc, trio.Cancelled | KeyboardInterrupt):
            return exc
    return leaves[0] if leaves else group
