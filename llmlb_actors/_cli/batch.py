"""``llmlb batch``: JSONL prompts in, JSONL answers out, resumable and crash-safe.
Strictly private; the formats are documented in README.md ("Batch files").

Crash safety comes from three rules:

* the output is opened with ``O_APPEND`` and each record is one ``os.write``
  of one whole line, so a ``kill -9`` can only lose requests still in flight;
* on start, a torn last line (a power cut mid-write) is cut off, and every
  other line must parse, so we never append to a file that is not ours;
* ids that already have a ``result`` line are skipped, so rerunning the same
  command finishes the job and answers each id exactly once.
"""

from __future__ import annotations

import datetime
import os
from typing import TYPE_CHECKING, Any, cast

import msgspec
import trio

from .. import _version
from .._balancer import open_balancer
from .._errors import BalancerClosedError
from .._models import LLMRequest, Message
from .._secrets import Redactor
from .._shared._url import parse_shared_state
from .common import (
    SIMULATOR,
    config_fingerprint,
    console,
    open_target,
    print_provider_table,
)
from .fleets import batch_fleet
from .progress import open_progress

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator

    from .._batch import BatchResult
    from .shard import Shard

__all__ = ["BatchAbort", "run_batch"]

_UNSET: Any = msgspec.UNSET

# A line that is not JSON, not UTF-8, or nested too deep for the decoder.
_UNDECODABLE = (msgspec.DecodeError, UnicodeError, RecursionError)


# -- input ---------------------------------------------------------------------------


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


class _IdOnly(msgspec.Struct):
    id: Any = None


_decode_input = msgspec.json.Decoder(_InputLine).decode
_decode_id = msgspec.json.Decoder(_IdOnly).decode


def _key(id_: object) -> str:
    """Ids compare as strings: ``7`` and ``"7"`` are the same id."""
    return id_ if isinstance(id_, str) else str(id_)


# -- output --------------------------------------------------------------------------


class _Header(msgspec.Struct, kw_only=True, tag="header", tag_field="type"):
    version: str
    started: str
    input: str
    target: str
    config_hash: str
    strategy: str
    seed: int | None
    concurrency: int
    ordered: bool
    providers: list[str]
    already_answered: int
    to_do: int


class _ErrorInfo(msgspec.Struct, kw_only=True):
    type: str
    message: str
    attempts: list[dict[str, Any]] = msgspec.field(default_factory=list)


class _TokenCounts(msgspec.Struct, kw_only=True, omit_defaults=True):
    """`Usage` as a result line writes it: the cache and reasoning counts only when reported."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0


class _Result(msgspec.Struct, kw_only=True, tag="result", tag_field="type"):
    id: str | int
    line: int
    provider: str
    model: str
    content: str
    finish_reason: str | None
    usage: _TokenCounts
    latency: float
    attempts: int
    meta: msgspec.Raw | msgspec.UnsetType = _UNSET


class _Error(msgspec.Struct, kw_only=True, tag="error", tag_field="type"):
    id: str | int | None
    line: int
    error: _ErrorInfo
    provider: str | None = None
    attempts: int = 0
    latency: float = 0.0
    meta: msgspec.Raw | msgspec.UnsetType = _UNSET


class _Seen(msgspec.Struct, kw_only=True):
    """What resuming needs from an existing output line."""

    type: str
    id: Any = None
    line: int | None = None
    error: _ErrorInfo | None = None


_encode = msgspec.json.Encoder().encode
_decode_seen = msgspec.json.Decoder(_Seen).decode

INPUT_ERROR = "InputError"


class BatchAbort(Exception):
    """The batch cannot start (bad files); the message is for the user."""


class _Output:
    """The output file: append-only, one ``os.write`` per whole line."""

    def __init__(self, path: str, redact: Redactor) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._redact = redact

    def write(self, record: msgspec.Struct) -> None:
        data = memoryview(self._redact.bytes(_encode(record)) + b"\n")
        while data:
            # O_APPEND puts each write at the end; a regular file takes it whole.
            written = os.write(self._fd, data)
            data = data[written:]

    def close(self) -> None:
        os.close(self._fd)


class _Resume(msgspec.Struct, kw_only=True):
    answered: set[str]
    bad_lines: set[int]


def _scan_output(path: str) -> _Resume:
    """Ids already answered and input lines already reported bad; repairs a torn tail."""
    answered: set[str] = set()
    bad_lines: set[int] = set()
    try:
        handle = open(path, "rb+")  # noqa: SIM115 (closed below; truncated in place)
    except FileNotFoundError:
        return _Resume(answered=answered, bad_lines=bad_lines)
    with handle:
        good_end = 0
        number = 0
        for raw in handle:
            number += 1
            if not raw.endswith(b"\n"):
                # The last write was cut short (power loss); drop it and redo its id.
                handle.truncate(good_end)
                break
            good_end += len(raw)
            if not raw.strip():
                continue
            try:
                seen = _decode_seen(raw)
            except _UNDECODABLE:
                raise BatchAbort(
                    f"{path}:{number} is not a llmlb batch record; refusing to append to it"
                ) from None
            if seen.type == "result" and seen.id is not None:
                answered.add(_key(seen.id))
            elif (
                seen.type == "error"
                and seen.error is not None
                and seen.error.type == INPUT_ERROR
                and seen.line is not None
            ):
                bad_lines.add(seen.line)
    return _Resume(answered=answered, bad_lines=bad_lines)


def _count_to_do(path: str, resume: _Resume, shard: Shard | None = None) -> int:
    """How many input lines this run will process (cheap: decodes ids only)."""
    count = 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                id_ = _decode_id(raw).id
            except _UNDECODABLE:
                count += number not in resume.bad_lines and _owns(shard, str(number))
                continue
            key = _key(number if id_ is None else id_)
            count += (
                key not in resume.answered and number not in resume.bad_lines and _owns(shard, key)
            )
    return count


def _owns(shard: Shard | None, key: str) -> bool:
    """Whether this run answers the id ``key`` (every id without ``--shard``)."""
    return shard is None or shard.owns(key)


class _BadLine(msgspec.Struct, frozen=True):
    """An input line that cannot be sent: it travels through ``lb.map`` as a non-request
    item (which comes back as an error result) so that ``--ordered`` keeps its place."""

    number: int
    id: str | int | None
    message: str


class _Pending(msgspec.Struct, frozen=True):
    number: int
    id: str | int
    meta: msgspec.Raw | msgspec.UnsetType


class _Run:
    """State of one batch run: the items in flight (by map index) and the tallies."""

    def __init__(self, output: _Output, resume: _Resume, shard: Shard | None = None) -> None:
        self.output = output
        self.resume = resume
        self.shard = shard
        self.other_shards = 0
        # Only items between "read" and "written" are here: at most lb.map's window.
        self.pending: dict[int, _Pending | _BadLine] = {}
        self.seen_ids: dict[str, int] = {}
        self.answered = 0
        self.failed = 0
        self.interrupted = 0
        self.input_errors = 0
        self.skipped = 0
        self.by_provider: dict[str, int] = {}
        self.errors_by_provider: dict[str, int] = {}

    def items(self, path: str) -> Iterator[LLMRequest | _BadLine]:
        """Lazily read the input: one item per line still to do, in line order."""
        index = 0
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, 1):
                if not raw.strip():
                    continue
                item = self._parse(number, raw)
                if item is None:
                    continue
                if isinstance(item, _BadLine):
                    self.pending[index] = item
                    yield item
                else:
                    request, pending = item
                    self.pending[index] = pending
                    yield request
                index += 1

    def _parse(self, number: int, raw: bytes) -> tuple[LLMRequest, _Pending] | _BadLine | None:
        """The request on this line, a bad line to report, or None (already done)."""
        try:
            item = _decode_input(raw)
        except _UNDECODABLE as exc:
            if not _owns(self.shard, _key(self._line_id(number, raw))):
                self.other_shards += 1
                return None
            return self._bad(number, raw, str(exc))
        id_: str | int = number if item.id is None else item.id
        key = _key(id_)
        if not _owns(self.shard, key):
            self.other_shards += 1
            return None
        if key in self.resume.answered:
            self.skipped += 1
            return None
        first = self.seen_ids.get(key)
        if first is not None:
            return self._bad(number, raw, f"duplicate id {id_!r} (first on line {first})", id_)
        self.seen_ids[key] = number
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
            return self._bad(number, raw, str(exc), id_)
        return request, _Pending(number, id_, item.meta)

    @staticmethod
    def _line_id(number: int, raw: bytes) -> str | int:
        """A bad line's id if it has a readable one, else its line number."""
        try:
            found = _decode_id(raw).id
        except _UNDECODABLE:
            return number
        return found if isinstance(found, str | int) and not isinstance(found, bool) else number

    def _bad(
        self, number: int, raw: bytes, message: str, id_: str | int | None = None
    ) -> _BadLine | None:
        if number in self.resume.bad_lines:
            # Reported by an earlier run and still bad: do not report it twice.
            self.skipped += 1
            return None
        if id_ is None:
            try:
                found = _decode_id(raw).id
            except _UNDECODABLE:
                found = None
            id_ = found if isinstance(found, str | int) and not isinstance(found, bool) else None
        return _BadLine(number, id_, f"line {number}: {message}")

    def record(self, result: BatchResult) -> bool:
        """Write the line for one result; True if it is an error."""
        pending = self.pending.pop(result.index)
        if isinstance(pending, _BadLine):
            self.input_errors += 1
            self.output.write(
                _Error(
                    id=pending.id,
                    line=pending.number,
                    error=_ErrorInfo(type=INPUT_ERROR, message=pending.message),
                )
            )
            return True
        response = result.response
        if response is not None:
            self.answered += 1
            self.by_provider[response.provider] = self.by_provider.get(response.provider, 0) + 1
            self.output.write(
                _Result(
                    id=pending.id,
                    line=pending.number,
                    provider=response.provider,
                    model=response.model,
                    content=response.content,
                    finish_reason=response.finish_reason,
                    usage=_TokenCounts(**msgspec.structs.asdict(response.usage)),
                    latency=round(result.latency, 6),
                    attempts=response.attempts,
                    meta=pending.meta,
                )
            )
            return False
        if isinstance(result.error, BalancerClosedError):
            # Stopped (Ctrl-C, shutdown), not failed: no line, so a rerun asks again.
            self.interrupted += 1
            return False
        self.failed += 1
        provider = result.provider or "-"
        self.errors_by_provider[provider] = self.errors_by_provider.get(provider, 0) + 1
        summary = result.error_summary() or {"type": "Error", "message": "unknown"}
        self.output.write(
            _Error(
                id=pending.id,
                line=pending.number,
                error=_ErrorInfo(**summary),
                provider=result.provider,
                attempts=result.attempts,
                latency=round(result.latency, 6),
                meta=pending.meta,
            )
        )
        return True


def _tuple(value: list[str] | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


def _prepare(input_path: str, output_path: str, shard: Shard | None = None) -> tuple[_Resume, int]:
    """Check the files, read what is already done, count what is left (before any I/O)."""
    if not os.path.isfile(input_path):
        raise BatchAbort(f"input file {input_path} does not exist")
    if os.path.exists(output_path) and os.path.samefile(input_path, output_path):
        raise BatchAbort("the output file must not be the input file")
    resume = _scan_output(output_path)
    return resume, _count_to_do(input_path, resume, shard)


async def run_batch(args: argparse.Namespace) -> int:
    """Run ``llmlb batch``; returns the exit status."""
    input_path: str = args.input
    output_path: str = args.output
    shard: Shard | None = getattr(args, "shard", None)
    shared_state: str | None = getattr(args, "shared_state", None)
    overrides: dict[str, Any] = {}
    if shared_state is not None:
        try:
            parse_shared_state(shared_state)
        except ValueError as exc:
            raise BatchAbort(str(exc)) from None
        overrides["shared_state"] = shared_state
    resume, to_do = _prepare(input_path, output_path, shard)
    async with open_target(
        args, batch_fleet(), sim_overrides={"health_check_interval": None}, overrides=overrides
    ) as target:
        config = target.config
        redact = Redactor.for_balancer(config)
        output = _Output(output_path, redact)
        run = _Run(output, resume, shard)
        try:
            output.write(
                _Header(
                    version=_version.__version__,
                    started=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                    input=input_path,
                    target=target.label,
                    config_hash=config_fingerprint(config, simulated=target.label == SIMULATOR),
                    strategy=config.strategy,
                    seed=config.seed,
                    concurrency=args.concurrency,
                    ordered=args.ordered,
                    providers=[p.name for p in config.providers],
                    already_answered=len(resume.answered),
                    to_do=to_do,
                )
            )
            started = trio.current_time()
            async with (
                open_progress(to_do, "batch", enabled=not args.quiet) as progress,
                open_balancer(config) as lb,
            ):
                # Bad lines ride along as non-requests: lb.map answers them with an
                # error result in their place, which keeps --ordered exact.
                items = cast("Iterator[LLMRequest]", run.items(input_path))
                async with lb.map(
                    items, concurrency=args.concurrency, ordered=args.ordered
                ) as results:
                    async for result in results:
                        progress.advance(error=run.record(result))
                stats = lb.get_stats()
                totals = lb.get_totals()
            elapsed = trio.current_time() - started
        finally:
            output.close()
    out = console()
    extra = {
        name: {
            "answered": str(run.by_provider.get(name, 0)),
            "errors": str(run.errors_by_provider.get(name, 0)),
        }
        for name in stats
    }
    print_provider_table(out, stats, totals, redact, title="Batch by provider", extra=extra)
    out.print(
        f"Batch: {run.answered} answered, {run.failed} failed, {run.input_errors} bad input "
        f"lines, {run.skipped} skipped (already done)"
        + (f", {run.other_shards} left to other shards (shard {shard})" if shard else "")
        + f" in {elapsed:.2f}s -> {output_path}"
    )
    return 0
