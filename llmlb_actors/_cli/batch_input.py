"""``llmlb batch`` input: one JSON object per line, checked line by line, and the
input's identity (path, size, content hash) that a resume is compared with.
Strictly private.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from typing import TYPE_CHECKING, Any

import msgspec

from .._models import LLMRequest, Message
from .errors import CommandError

if TYPE_CHECKING:
    from collections.abc import Callable, Container, Iterator

__all__ = [
    "BadLine",
    "InputIdentity",
    "Prompt",
    "Survey",
    "check_input_path",
    "classify",
    "key_of",
    "line_key",
    "survey",
]

_UNSET: Any = msgspec.UNSET

# A line that is not JSON, not UTF-8, or nested too deep for the decoder.
UNDECODABLE = (msgspec.DecodeError, UnicodeError, RecursionError)

#: How many bad lines a run shows on stderr before it only counts them.
SHOWN_BAD_LINES = 5


class _InputLine(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One input line. ``meta`` is copied verbatim into the output line."""

    id: str | int | None = None
    prompt: str | None = None
    messages: list[Message] | None = None
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    meta: msgspec.Raw | msgspec.UnsetType = _UNSET


VALID_KEYS = _InputLine.__struct_fields__


class _IdOnly(msgspec.Struct):
    id: Any = None


_decode_input = msgspec.json.Decoder(_InputLine).decode
_decode_id = msgspec.json.Decoder(_IdOnly).decode

_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `(.*)`$")
_AT_PATH = re.compile(r"^Expected `(.*)`, got `(.*)` - at `\$\.?(.*)`$")


def key_of(id_: object) -> str:
    """Ids compare as strings: ``7`` and ``"7"`` are the same id."""
    return id_ if isinstance(id_, str) else str(id_)


class Prompt(msgspec.Struct, frozen=True):
    """A good line: the request to send and what its output line repeats."""

    number: int
    id: str | int
    request: LLMRequest
    meta: msgspec.Raw | msgspec.UnsetType


class BadLine(msgspec.Struct, frozen=True):
    """A line that cannot be sent; ``message`` starts with ``line N:``."""

    number: int
    id: str | int | None
    message: str


def _explain(exc: Exception) -> str:
    """msgspec's message in the words of the input format."""
    text = str(exc)
    unknown = _UNKNOWN_FIELD.match(text)
    if unknown:
        field = unknown.group(1)
        close = difflib.get_close_matches(field, VALID_KEYS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown field {field!r}{hint}; valid keys: {', '.join(VALID_KEYS)}"
    at_path = _AT_PATH.match(text)
    if at_path:
        expected, got, path = at_path.groups()
        expected = expected.replace(" | ", " or ")
        return f"{path or 'the line'}: expected {expected}, got {got}"
    if text.startswith("Expected `object`"):
        return f"expected a JSON object with keys {', '.join(VALID_KEYS)}; {text}"
    return text


def classify(number: int, raw: bytes, seen: dict[str, int]) -> Prompt | BadLine:
    """What the line at ``number`` is. ``seen`` maps ids met so far to their first line
    (updated here), so a repeated id is a bad line."""
    try:
        item = _decode_input(raw)
    except UNDECODABLE as exc:
        return _bad(number, raw, _explain(exc))
    id_: str | int = number if item.id is None else item.id
    key = key_of(id_)
    first = seen.get(key)
    if first is not None:
        return _bad(number, raw, f"duplicate id {id_!r} (first on line {first})", id_)
    seen[key] = number
    try:
        request = LLMRequest(
            prompt=item.prompt,
            messages=tuple(item.messages) if item.messages is not None else None,
            system=item.system,
            max_tokens=item.max_tokens,
            temperature=item.temperature,
            top_p=item.top_p,
            stop=(item.stop,) if isinstance(item.stop, str) else _tuple(item.stop),
            id=key,
        )
    except (ValueError, TypeError) as exc:
        return _bad(number, raw, str(exc), id_)
    return Prompt(number, id_, request, item.meta)


def _tuple(value: list[str] | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


def _bad(number: int, raw: bytes, message: str, id_: str | int | None = None) -> BadLine:
    if id_ is None:
        try:
            found = _decode_id(raw).id
        except UNDECODABLE:
            found = None
        id_ = found if isinstance(found, str | int) and not isinstance(found, bool) else None
    return BadLine(number, id_, f"line {number}: {message}")


def line_key(item: Prompt | BadLine) -> str:
    """The id a line is known by (its line number when it has no readable id): what
    resuming and ``--shard`` go by."""
    id_ = item.id if item.id is not None else item.number
    return key_of(id_)


def lines(path: str) -> Iterator[tuple[int, bytes]]:
    """``(line number, raw line)`` of every non-blank line."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            if raw.strip():
                yield number, raw


# -- identity and the survey before a run -------------------------------------------


class InputIdentity(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    """Absolute, symlinks resolved."""
    size: int
    sha256: str
    """Of the whole file as this run found it."""
    prefix_sha256: str | None
    """Of its first ``prefix_size`` bytes (what an earlier run saw), if asked for."""
    prefix_size: int | None


class Survey(msgspec.Struct, kw_only=True):
    """What a pass over the input found before anything is sent."""

    identity: InputIdentity
    prompts: int = 0
    """Non-blank lines."""
    bad: list[BadLine] = msgspec.field(default_factory=list)
    """The first `SHOWN_BAD_LINES` bad lines."""
    bad_count: int = 0
    to_do: int = 0
    """Lines this run will send or report: neither answered nor reported before."""
    other_shards: int = 0
    """Lines left to the other shards (``--shard``)."""


def check_input_path(path: str) -> None:
    """Refuse an input that cannot be read, with a message that says why."""
    if not os.path.exists(path):
        raise CommandError(f"input {path} does not exist")
    if os.path.isdir(path):
        raise CommandError(f"input {path} is a directory; give a JSONL file")
    if not os.path.isfile(path):
        raise CommandError(f"input {path} is not a regular file")
    if not os.access(path, os.R_OK):
        raise CommandError(f"input {path} cannot be read (permission denied)")


def survey(
    path: str,
    *,
    answered: Container[str],
    reported: Container[int],
    prefix_size: int | None,
    owns: Callable[[str], bool] | None = None,
) -> Survey:
    """One pass over the input: its identity, its bad lines, and how much is left to do.

    ``answered`` are ids with a result already, ``reported`` line numbers already
    written as bad; ``prefix_size`` asks for the hash of the file's first bytes
    too (the size an earlier run recorded), so a resume can tell an input that
    only grew from one that changed. ``owns`` (``--shard``) says which ids are
    this run's; the others are only counted.
    """
    whole = hashlib.sha256()
    prefix: str | None = None
    position = 0
    seen: dict[str, int] = {}
    result = Survey(
        identity=InputIdentity(
            path="", size=0, sha256="", prefix_sha256=None, prefix_size=prefix_size
        )
    )
    try:
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, 1):
                if prefix_size is not None and prefix is None:
                    if position + len(raw) >= prefix_size:
                        cut = prefix_size - position
                        whole.update(raw[:cut])
                        prefix = whole.hexdigest()
                        whole.update(raw[cut:])
                    else:
                        whole.update(raw)
                else:
                    whole.update(raw)
                position += len(raw)
                if not raw.strip():
                    continue
                item = classify(number, raw, seen)
                if owns is not None and not owns(line_key(item)):
                    result.other_shards += 1
                    continue
                result.prompts += 1
                if isinstance(item, BadLine):
                    result.bad_count += 1
                    if len(result.bad) < SHOWN_BAD_LINES:
                        result.bad.append(item)
                    result.to_do += number not in reported
                else:
                    result.to_do += key_of(item.id) not in answered
    except OSError as exc:
        raise CommandError(f"input {path} cannot be read: {exc.strerror or exc}") from None
    if prefix_size is not None and prefix is None and position == prefix_size:
        prefix = whole.hexdigest()
    result.identity = InputIdentity(
        path=os.path.realpath(path),
        size=position,
        sha256=whole.hexdigest(),
        prefix_sha256=prefix,
        prefix_size=prefix_size,
    )
    return result


def describe_bad_lines(found: Survey) -> list[str]:
    """The stderr lines about bad input: a count, then the first few."""
    head = (
        f"{found.bad_count} of {found.prompts} input lines are bad"
        if found.bad_count != 1
        else f"1 of {found.prompts} input lines is bad"
    )
    shown = [f"  {bad.message}" for bad in found.bad]
    more = found.bad_count - len(found.bad)
    if more:
        shown.append(f"  ... and {more} more")
    return [head + ":", *shown]
