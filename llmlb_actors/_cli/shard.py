"""``llmlb batch --shard K/N``: which input ids one of N batch processes answers.

An id belongs to shard ``K`` (1-based) when a stable hash of it (BLAKE2b of the id
as a string, so ``7`` and ``"7"`` agree, as they do for resuming) is ``K - 1``
modulo ``N``: the split depends on the ids only, not on line order or on the
machine, so every shard can read the same input file and together the N shards
answer each id exactly once. A line without an id is known by its line number
(then the shards must read the same file, line for line). Strictly private.
"""

from __future__ import annotations

import hashlib
import re

import msgspec

__all__ = ["Shard", "parse_shard"]

_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


class Shard(msgspec.Struct, frozen=True):
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def owns(self, key: str) -> bool:
        """Whether the id ``key`` (an id as a string) is this shard's."""
        digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        return int.from_bytes(digest, "big") % self.count == self.index - 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"K/N"`` with 1 <= K <= N; `ValueError` saying what is wrong otherwise."""
    match = _SPEC.match(text)
    if match is None:
        raise ValueError(f"a shard is K/N (e.g. 2/3), got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"a shard K/N needs 1 <= K <= N, got {text!r}")
    return Shard(index, count)
