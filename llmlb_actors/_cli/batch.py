"""``llmlb batch``: JSONL prompts in, JSONL answers out. Strictly private; the formats
are documented in README.md ("Batch files").

A batch spends the user's money, so before anything is sent it makes sure it
is the only writer of its output (`batch_output`), that a resume continues the
same job (same input, same providers) and that the input is readable; while it
runs it stops once failures say that going on only burns requests
(``--max-errors``). Every refusal is one line that says what to do.
"""

from __future__ import annotations

import datetime
import os
import sys
from typing import TYPE_CHECKING, cast

import msgspec
import trio

from .. import _version
from .._balancer import open_balancer
from .._errors import ALL_REFUSED, BalancerClosedError, LoadBalancerError
from .._secrets import Redactor
from .._shared._url import parse_shared_state
from .batch_input import (
    BadLine,
    InputIdentity,
    Prompt,
    Survey,
    check_input_path,
    classify,
    describe_bad_lines,
    key_of,
    line_key,
    lines,
    survey,
)
from .batch_output import (
    INPUT_ERROR,
    ErrorInfo,
    ErrorRecord,
    Header,
    OutputFile,
    ResultRecord,
    Resume,
    TokenCounts,
)
from .common import (
    SIMULATOR,
    Target,
    config_fingerprint,
    console,
    deadline_overrides,
    observer,
    open_target,
    print_provider_table,
    providers_fingerprint,
)
from .errors import CommandError
from .fleets import default_fleet
from .progress import open_progress
from .text import plural

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator

    from .._batch import BatchResult
    from .._models import LLMRequest
    from .shard import Shard

__all__ = ["DEFAULT_MAX_ERRORS", "run_batch"]

#: Failed prompts in a row after which a batch stops (``--max-errors``).
DEFAULT_MAX_ERRORS = 50


class _Run:
    """State of one batch run: the items in flight (by map index) and the tallies."""

    def __init__(
        self, output: OutputFile, resume: Resume, max_errors: int, shard: Shard | None
    ) -> None:
        self.output = output
        self.resume = resume
        self.max_errors = max_errors
        self.shard = shard
        self.other_shards = 0
        # Only items between "read" and "written" are here: at most lb.map's window.
        self.pending: dict[int, Prompt | BadLine] = {}
        self.answered = 0
        self.failed = 0
        self.interrupted = 0
        self.input_errors = 0
        self.skipped = 0
        self.failed_in_a_row = 0
        self.last_failure = ""
        self.all_refused = False
        self.by_provider: dict[str, int] = {}
        self.errors_by_provider: dict[str, int] = {}

    def items(self, path: str) -> Iterator[LLMRequest | BadLine]:
        """Lazily read the input: one item per line still to do, in line order.

        Bad lines ride along as non-requests: ``lb.map`` answers them with an
        error result in their place, which keeps ``--ordered`` exact.
        """
        seen: dict[str, int] = {}
        index = 0
        owns = None if self.shard is None else self.shard.owns
        for number, raw in lines(path):
            if self.must_stop:
                return  # the stop is decided: no prompt is taken, so none is sent
            item = classify(number, raw, seen)
            if owns is not None and not owns(line_key(item)):
                self.other_shards += 1  # another shard's line (--shard)
                continue
            if isinstance(item, BadLine):
                if number in self.resume.bad_lines:
                    self.skipped += 1  # reported by an earlier run and still bad
                    continue
                self.pending[index] = item
                yield item
            else:
                if key_of(item.id) in self.resume.answered:
                    self.skipped += 1
                    continue
                self.pending[index] = item
                yield item.request
            index += 1

    @property
    def must_stop(self) -> bool:
        """Going on would only burn requests: every provider refused us, or
        ``--max-errors`` prompts failed in a row."""
        return self.all_refused or self.failed_in_a_row >= self.max_errors

    def why_stopped(self, max_errors_flag: int) -> str:
        """``aborted ...``: why `must_stop` became true."""
        if self.all_refused:
            return f"aborted: {self.last_failure}"
        return (
            f"aborted after {self.failed_in_a_row} failed prompts in a row "
            f"(--max-errors {max_errors_flag}; last: {self.last_failure})"
        )

    def record(self, result: BatchResult) -> bool:
        """Write the line for one result; True if it is an error."""
        pending = self.pending.pop(result.index)
        if isinstance(pending, BadLine):
            self.input_errors += 1
            self.output.write(
                ErrorRecord(
                    id=pending.id,
                    line=pending.number,
                    error=ErrorInfo(type=INPUT_ERROR, message=pending.message),
                )
            )
            return True
        response = result.response
        if response is not None:
            self.answered += 1
            self.failed_in_a_row = 0
            self.by_provider[response.provider] = self.by_provider.get(response.provider, 0) + 1
            self.output.write(
                ResultRecord(
                    id=pending.id,
                    line=pending.number,
                    provider=response.provider,
                    model=response.model,
                    content=response.content,
                    finish_reason=response.finish_reason,
                    usage=TokenCounts(**msgspec.structs.asdict(response.usage)),
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
        self.failed_in_a_row += 1
        self.last_failure = _failure_text(result)
        error = result.error
        self.all_refused = isinstance(error, LoadBalancerError) and error.message.startswith(
            ALL_REFUSED
        )
        provider = result.provider or "-"
        self.errors_by_provider[provider] = self.errors_by_provider.get(provider, 0) + 1
        summary = result.error_summary() or {"type": "Error", "message": "unknown"}
        self.output.write(
            ErrorRecord(
                id=pending.id,
                line=pending.number,
                error=ErrorInfo(**summary),
                provider=result.provider,
                attempts=result.attempts,
                latency=round(result.latency, 6),
                meta=pending.meta,
            )
        )
        return True


def _failure_text(result: BatchResult) -> str:
    error = result.error
    if isinstance(error, LoadBalancerError) and error.errors:
        if error.message.startswith(ALL_REFUSED):
            return error.message  # it already names every provider's reason
        return f"{error.message} ({error.errors[-1]})"
    return str(error)


# -- before anything is sent ----------------------------------------------------------


def _check_same_input(previous: Header, found: InputIdentity, given: str) -> None:
    """Refuse a resume whose input is not the one the output was written for.

    Same path: the file may have grown (new prompts appended), but what the
    earlier run saw must be unchanged. Another path: only an identical file
    (a copy, a rename) is the same job.
    """
    if previous.input_sha256 is None or previous.input_size is None:
        return  # written before job identity existed
    fix = "use --force-resume to append anyway, --restart to start over, or another -o"
    if found.path == previous.input_path:
        if found.prefix_sha256 != previous.input_sha256:
            raise CommandError(
                f"input {given} changed since this output was started on {previous.started} "
                f"(its first {previous.input_size} bytes differ); {fix}"
            )
    elif found.size != previous.input_size or found.sha256 != previous.input_sha256:
        raise CommandError(
            f"this output was written for input {previous.input_path}, not {given} "
            f"(another file with other content); {fix}"
        )


def _check_same_providers(previous: Header, fingerprint: str, target: str, names: str) -> None:
    if previous.providers_hash is None or previous.providers_hash == fingerprint:
        return
    raise CommandError(
        f"the providers differ: this output was answered by {previous.target} "
        f"({', '.join(previous.providers)}), this run would use {target} ({names}); "
        "use --force-resume to mix their answers in one file, --restart to start over, "
        "or another -o"
    )


def _shared_state(args: argparse.Namespace) -> dict[str, str]:
    """``--shared-state URL`` as a config override, checked before anything starts (a
    malformed URL is refused without echoing its password)."""
    url: str | None = args.shared_state
    if url is None:
        return {}
    try:
        parse_shared_state(url)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    return {"shared_state": url}


def _header(
    args: argparse.Namespace, target: Target, resume: Resume, found: Survey, fingerprint: str
) -> Header:
    config = target.config
    identity = found.identity
    return Header(
        version=_version.__version__,
        started=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        input=args.input,
        target=target.label,
        config_hash=config_fingerprint(config, simulated=target.label == SIMULATOR),
        strategy=config.strategy,
        seed=config.seed,
        concurrency=args.concurrency,
        ordered=args.ordered,
        providers=[p.name for p in config.providers],
        already_answered=len(resume.answered),
        to_do=found.to_do,
        input_path=identity.path,
        input_size=identity.size,
        input_sha256=identity.sha256,
        providers_hash=fingerprint,
        shard=None if args.shard is None else str(args.shard),
    )


def _open(args: argparse.Namespace) -> tuple[OutputFile, Resume, Survey]:
    """Check the paths, take the output, read what is done, survey the input, and check
    the job is the same one; on a refusal the output is released (and removed if this
    run created it)."""
    check_input_path(args.input)
    if os.path.exists(args.output) and os.path.samefile(args.input, args.output):
        raise CommandError("the output file must not be the input file")
    output = OutputFile(args.output)
    try:
        resume, found = _prepare(args, output)
    except BaseException:
        output.close(discard_if_new=True)
        raise
    return output, resume, found


def _prepare(args: argparse.Namespace, output: OutputFile) -> tuple[Resume, Survey]:
    if args.restart:
        backup = output.restart()
        if backup is not None:
            note = f"llmlb batch: starting over; the old output is kept as {backup}"
            print(note, file=sys.stderr)
    resume = output.scan()
    previous = None if args.force_resume else resume.header
    shard: Shard | None = args.shard
    found = survey(
        args.input,
        answered=resume.answered,
        reported=resume.bad_lines,
        prefix_size=previous.input_size if previous is not None else None,
        owns=None if shard is None else shard.owns,
    )
    if previous is not None:
        _check_same_input(previous, found.identity, args.input)
    if found.bad_count and args.strict:
        head, *shown = describe_bad_lines(found)
        raise CommandError("\n".join([f"--strict: {head}", *shown, "nothing was sent"]))
    return resume, found


async def run_batch(args: argparse.Namespace) -> int:
    """Run ``llmlb batch``; returns the exit status."""
    input_path: str = args.input
    output_path: str = args.output
    overrides = {**deadline_overrides(args), **_shared_state(args)}
    output, resume, found = _open(args)
    started_writing = False
    try:
        if found.to_do == 0:
            what = "has no prompts" if found.prompts == 0 else "is done"
            print(
                f"llmlb batch: nothing to do: {input_path} {what} "
                f"({len(resume.answered)} answered in {output_path})"
            )
            return 0
        if found.bad_count:
            head, *shown = describe_bad_lines(found)
            print(f"llmlb batch: {head}", *shown, sep="\n", file=sys.stderr)
            print("llmlb batch: (--strict refuses bad lines before sending)", file=sys.stderr)
        async with open_target(
            args,
            default_fleet(),
            sim_overrides={"health_check_interval": None},
            overrides=overrides,
        ) as target:
            config = target.config
            fingerprint = providers_fingerprint(config, simulated=target.label == SIMULATOR)
            names = ", ".join(p.name for p in config.providers)
            if resume.header is not None and not args.force_resume:
                _check_same_providers(resume.header, fingerprint, target.label, names)
            redact = Redactor.for_balancer(config)
            output.redact = redact
            output.write(_header(args, target, resume, found, fingerprint))
            started_writing = True
            run = _Run(output, resume, args.max_errors, args.shard)
            started = trio.current_time()
            async with open_balancer(config) as lb:
                async with open_progress(
                    found.to_do, "batch", enabled=not args.quiet, observe=observer(lb)
                ) as progress:
                    items = cast("Iterator[LLMRequest]", run.items(input_path))
                    # Unordered, a result is written as soon as it is in: no buffer, so
                    # when a failure stops the run, at most the requests in flight then
                    # were sent after it (a buffer would let up to --concurrency more go).
                    # --ordered needs the buffer to keep going past a slow early prompt.
                    async with lb.map(
                        items,
                        concurrency=args.concurrency,
                        ordered=args.ordered,
                        buffer=None if args.ordered else 0,
                    ) as results:
                        async for result in results:
                            progress.advance(error=run.record(result))
                            if run.must_stop:
                                break  # leaving the block cancels what is in flight
                stats = lb.get_stats()
                totals = lb.get_totals()
            elapsed = trio.current_time() - started
    finally:
        output.close(discard_if_new=not started_writing)
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
        f"Batch: {run.answered} answered, {run.failed} failed, "
        f"{plural(run.input_errors, 'bad input line')}, {run.skipped} skipped (already done)"
        + (f", {run.other_shards} left to other shards (shard {args.shard})" if args.shard else "")
        + f" in {elapsed:.2f}s -> {output_path}"
    )
    if run.must_stop:
        left = found.to_do - run.answered - run.failed - run.input_errors
        print(
            redact(
                f"llmlb batch: {run.why_stopped(args.max_errors)}; "
                f"{plural(left, 'prompt')} not sent yet; fix the cause and rerun the same "
                "command to resume"
            ),
            file=sys.stderr,
        )
        return 1
    return 0
