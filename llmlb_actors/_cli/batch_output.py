"""``llmlb batch`` output: the records, and the file they go to. Strictly private.

The file is guarded by four rules:

* **one writer**: a run holds an exclusive ``flock`` on the file for its whole
  life. The kernel drops it when the process ends, however it ends, so a
  ``kill -9`` never leaves a stale lock, and a second run on the same output
  stops at once instead of paying for every prompt a second time;
* **whole lines**: the file is opened with ``O_APPEND`` and each record is one
  ``os.write`` of one line, so a crash can only lose requests still in flight;
* **only ours**: on start a torn last line (a power cut mid-write) is cut off,
  and every other line must parse, so we never append to a file that is not
  an llmlb output;
* **one job**: each run's header records what the run was (see `Header`), and
  a resume is compared with the last header before anything is sent.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
from typing import TYPE_CHECKING, Any

import msgspec

from .batch_input import UNDECODABLE
from .errors import CommandError

if TYPE_CHECKING:
    from .._secrets import Redactor

__all__ = [
    "INPUT_ERROR",
    "ErrorInfo",
    "ErrorRecord",
    "Header",
    "OutputFile",
    "ResultRecord",
    "Resume",
    "TokenCounts",
]

_UNSET: Any = msgspec.UNSET

INPUT_ERROR = "InputError"


class Header(msgspec.Struct, kw_only=True, tag="header", tag_field="type"):
    """One line per run, before its results.

    The ``input_*`` fields and ``providers_hash`` are the job's identity;
    headers written before they existed lack them, and such a file resumes
    unchecked.
    """

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
    input_path: str | None = None
    input_size: int | None = None
    input_sha256: str | None = None
    providers_hash: str | None = None
    shard: str | None = None
    """``K/N`` with ``--shard``: which ids this run answers (not part of the identity:
    the shards' outputs concatenated are one job's, and resume as one)."""


class ErrorInfo(msgspec.Struct, kw_only=True):
    type: str
    message: str
    attempts: list[dict[str, Any]] = msgspec.field(default_factory=list)


class TokenCounts(msgspec.Struct, kw_only=True, omit_defaults=True):
    """`Usage` as a result line writes it: the cache and reasoning counts only when reported
    (so the lines of text-only providers keep the shape they always had)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0


class ResultRecord(msgspec.Struct, kw_only=True, tag="result", tag_field="type"):
    id: str | int
    line: int
    provider: str
    model: str
    content: str
    finish_reason: str | None
    usage: TokenCounts
    latency: float
    attempts: int
    meta: msgspec.Raw | msgspec.UnsetType = _UNSET


class ErrorRecord(msgspec.Struct, kw_only=True, tag="error", tag_field="type"):
    id: str | int | None
    line: int
    error: ErrorInfo
    provider: str | None = None
    attempts: int = 0
    latency: float = 0.0
    meta: msgspec.Raw | msgspec.UnsetType = _UNSET


class _Seen(msgspec.Struct, kw_only=True):
    """What resuming needs from an existing output line."""

    type: str
    id: Any = None
    line: int | None = None
    error: ErrorInfo | None = None


_encode = msgspec.json.Encoder().encode
_decode_seen = msgspec.json.Decoder(_Seen).decode
_decode_header = msgspec.json.Decoder(Header).decode


class Resume(msgspec.Struct, kw_only=True):
    """What earlier runs left in the output."""

    answered: set[str] = msgspec.field(default_factory=set)
    """Ids with a result line."""
    bad_lines: set[int] = msgspec.field(default_factory=set)
    """Input line numbers already reported as bad."""
    header: Header | None = None
    """The last run's header."""


def _open_error(path: str, exc: OSError) -> CommandError:
    if isinstance(exc, IsADirectoryError):
        return CommandError(f"output {path} is a directory; give a file path in it")
    if isinstance(exc, FileNotFoundError):
        parent = os.path.dirname(os.path.abspath(path))
        return CommandError(f"output {path}: directory {parent} does not exist")
    if isinstance(exc, PermissionError):
        return CommandError(f"output {path} cannot be written (permission denied)")
    return CommandError(f"output {path} cannot be opened: {exc.strerror or exc}")


class OutputFile:
    """The output, opened and locked for this run (see the module's rules)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.redact: Redactor | None = None
        existed = os.path.exists(path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise _open_error(path, exc) from None
        try:
            if not _is_regular(fd):
                raise CommandError(f"output {path} is not a regular file")
            _lock(fd, path)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.created = not existed

    # -- before the run -----------------------------------------------------------

    def scan(self) -> Resume:
        """Ids already answered, lines already reported bad, the last header; cuts a
        torn last line (a crash mid-write) so its prompt is asked again."""
        resume = Resume()
        last_header: bytes | None = None
        good_end = 0
        number = 0
        with open(self._fd, "rb", closefd=False) as handle:
            handle.seek(0)
            for raw in handle:
                number += 1
                if not raw.endswith(b"\n"):
                    os.ftruncate(self._fd, good_end)
                    break
                good_end += len(raw)
                if not raw.strip():
                    continue
                try:
                    seen = _decode_seen(raw)
                except UNDECODABLE:
                    raise CommandError(
                        f"{self.path}:{number} is not a llmlb batch record; "
                        "refusing to append to it"
                    ) from None
                if seen.type == "header":
                    last_header = raw
                elif seen.type == "result" and seen.id is not None:
                    resume.answered.add(seen.id if isinstance(seen.id, str) else str(seen.id))
                elif (
                    seen.type == "error"
                    and seen.error is not None
                    and seen.error.type == INPUT_ERROR
                    and seen.line is not None
                ):
                    resume.bad_lines.add(seen.line)
                elif seen.type not in ("result", "error"):
                    raise CommandError(
                        f"{self.path}:{number} is not a llmlb batch record; "
                        "refusing to append to it"
                    )
        if last_header is not None:
            try:
                resume.header = _decode_header(last_header)
            except msgspec.ValidationError:
                resume.header = None  # an older layout: resumed without the identity check
        return resume

    def restart(self) -> str | None:
        """Keep the current content as a backup and empty the file; returns the backup."""
        if os.fstat(self._fd).st_size == 0:
            return None
        backup = _free_name(self.path + ".bak")
        # Copied, not renamed: the lock stays on this file, which keeps its name.
        with open(self._fd, "rb", closefd=False) as source, open(backup, "xb") as target:
            source.seek(0)
            shutil.copyfileobj(source, target)
        os.ftruncate(self._fd, 0)
        return backup

    # -- during the run -----------------------------------------------------------

    def write(self, record: msgspec.Struct) -> None:
        data = _encode(record)
        if self.redact is not None:
            data = self.redact.bytes(data)
        view = memoryview(data + b"\n")
        while view:
            # O_APPEND puts each write at the end; a regular file takes it whole.
            written = os.write(self._fd, view)
            view = view[written:]

    def close(self, *, discard_if_new: bool = False) -> None:
        """Close (the lock goes with it); a file this run created and left empty is removed
        when asked, so a refused run leaves nothing behind."""
        if discard_if_new and self.created and os.fstat(self._fd).st_size == 0:
            os.unlink(self.path)
        os.close(self._fd)


def _is_regular(fd: int) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)


def _free_name(base: str) -> str:
    candidate, n = base, 1
    while os.path.exists(candidate):
        candidate = f"{base}.{n}"
        n += 1
    return candidate


def _lock(fd: int, path: str) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _lock_holder(fd)
        who = f"pid {pid}" if pid is not None else "another process"
        raise CommandError(
            f"output {path} is being written by another llmlb batch ({who}); "
            "wait for it to finish or stop it, or write to another file"
        ) from None
    except OSError as exc:
        raise CommandError(f"output {path} cannot be locked: {exc.strerror or exc}") from None


def _lock_holder(fd: int) -> int | None:
    """The pid holding a ``flock`` on ``fd``'s file, from Linux's ``/proc/locks``
    (``None`` elsewhere, or if it let go meanwhile)."""
    st = os.fstat(fd)
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as locks:
            for entry in locks:
                fields = entry.split()
                # "1: FLOCK  ADVISORY  WRITE 12345 fd:01:5678 0 EOF"; "->" marks waiters.
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
                    return int(fields[4])
    except (OSError, ValueError):
        return None
    return None
