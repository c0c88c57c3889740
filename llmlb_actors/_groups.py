"""Exception groups at the public edge: the caller gets back exactly what its own code
raised, and one exception (never a group of ours) when the balancer itself failed."""

from __future__ import annotations

import logging

import trio

__all__ = ["collapse_group", "unwrap_group"]

log = logging.getLogger("llmlb_actors")


def collapse_group(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception to raise for a nursery's group.

    Cancellation and Ctrl-C win (they must propagate); otherwise the first
    leaf in order. A group is returned only if it holds no leaf at all.
    """
    leaves = _leaves(group)
    for exc in leaves:
        if isinstance(exc, trio.Cancelled | KeyboardInterrupt):
            return exc
    return leaves[0] if leaves else group


def unwrap_group(
    group: BaseExceptionGroup[BaseException], body: BaseException | None
) -> BaseException:
    """What to raise when a nursery around the caller's ``async with`` block failed.

    ``body`` is what the caller's block raised, if anything. The nursery wrapped
    it in a group; the caller gets it back as it was: the same object (a group
    stays a group with every member), its context, cause and traceback
    untouched, provided it is raised outside an ``except`` clause (inside one,
    Python would make the nursery's group its context). Errors of the
    balancer's own tasks beside it are logged rather than lost, unless one is a
    Ctrl-C, which wins. Without a ``body`` the group is the balancer's own, and
    is collapsed (`collapse_group`).
    """
    if body is None:
        return collapse_group(group)
    # By leaf: trio may re-derive the group objects on the way (a cancel scope
    # splitting out its Cancelled), but never the exceptions inside them.
    mine = {id(leaf) for leaf in _leaves(body)}
    leaves = _leaves(group)
    if not any(id(leaf) in mine for leaf in leaves):
        return collapse_group(group)
    for leaf in leaves:
        if id(leaf) in mine:
            continue
        if isinstance(leaf, KeyboardInterrupt):
            return leaf
        if not isinstance(leaf, trio.Cancelled):
            log.error("internal error while the caller's block raised", exc_info=leaf)
    return body


def _leaves(group: BaseException) -> list[BaseException]:
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(reversed(exc.exceptions))
        else:
            leaves.append(exc)
    return leaves
