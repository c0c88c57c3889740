"""The ``llmlb`` command: demo, batch, bench, health, sim.

``llmlb COMMAND --help`` documents each one; the README's "The `llmlb` command"
section has the file formats and worked examples. Each command lives in its own
module of the private ``_cli`` package; this module is the entry point and the
argument parser. Without ``--config`` every command runs
against the built-in simulator on 127.0.0.1, so nothing needs keys or network.

Exit status: 0 on success; 1 when ``health`` finds a provider down or a
batch stopped early (``--max-errors``, or every provider refused); 2 for bad
usage, a bad config file, bad input/output files or a refused resume; 130
after Ctrl-C (``sim`` included).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import TYPE_CHECKING

from ._config import STRATEGY_NAMES

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from ._cli.shard import Shard

__all__ = ["build_parser", "main"]

_FILE_STRATEGIES = [s for s in STRATEGY_NAMES if s != "custom"]


def _shard(text: str) -> Shard:
    from ._cli.shard import parse_shard

    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps prose to the terminal, paragraph by paragraph, and never inside a word;
    indented lines (examples) keep their place and wrap only at spaces."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        blocks: list[str] = []
        for paragraph in text.strip("\n").split("\n\n"):
            rows = paragraph.split("\n")
            if all(row.startswith(" ") for row in rows[1:]) and rows[0].endswith(":"):
                # "Examples:" and its indented lines
                blocks.append("\n".join([indent + rows[0], *self._rows(rows[1:], width, indent)]))
            else:
                blocks.append(_wrap(" ".join(r.strip() for r in rows), width, indent))
        return "\n\n".join(blocks)

    @staticmethod
    def _rows(rows: list[str], width: int, indent: str) -> list[str]:
        out = []
        for row in rows:
            lead = indent + row[: len(row) - len(row.lstrip())]
            out.append(_wrap(row.strip(), width, lead, lead + "    "))
        return out

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(
            " ".join(text.split()), width, break_long_words=False, break_on_hyphens=False
        )


def _wrap(text: str, width: int, indent: str, subsequent: str | None = None) -> str:
    return textwrap.fill(
        text,
        max(width, 20),
        initial_indent=indent,
        subsequent_indent=indent if subsequent is None else subsequent,
        break_long_words=False,
        break_on_hyphens=False,
    )


def _examples(*lines: str) -> str:
    return "Examples:\n" + "\n".join(f"  {line}" for line in lines)


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


_non_negative_int = _int_at_least(0)
_positive_int = _int_at_least(1)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port in 0..65535, got {value}")
    return value


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="balancer config (.toml or .json; keys come from api_key_env variables); "
        "default: the built-in simulator",
    )


def _add_strategy(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--strategy",
        choices=_FILE_STRATEGIES,
        metavar="NAME",
        help=f"routing strategy: {', '.join(_FILE_STRATEGIES)} (overrides the config)",
    )


def _add_deadlines(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="overall deadline of each request, retries included "
        "(overrides the config's request_timeout)",
    )
    parser.add_argument(
        "--max-retries",
        type=_non_negative_int,
        metavar="N",
        help="retries after a request's first attempt (overrides the config's max_retries)",
    )


def _add_seed(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seed",
        type=int,
        help="seed for every random choice (weighted picks, backoff jitter, probe spacing); "
        "default: the config's seed, else a fresh one that is recorded",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``llmlb`` (exposed for docs and tests)."""
    from ._cli.batch import DEFAULT_MAX_ERRORS
    from ._cli.fleets import DEFAULT_SIM_SPEC, SPEC_HELP

    parser = argparse.ArgumentParser(
        prog="llmlb",
        description="Load-balance LLM API calls across providers (a trio actor system). "
        "Without --config, commands run against the built-in loopback simulator.",
        epilog="Run `llmlb COMMAND --help` for each command's options and examples.",
        formatter_class=_HelpFormatter,
    )
    from ._version import __version__

    parser.add_argument("--version", action="version", version=f"llmlb {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo",
        help="run prompts against three simulated providers (one flaky), show the stats",
        description="Start the simulator with three providers (gamma is flaky: 503s and "
        "rare hangs), send prompts through the balancer with a live progress bar, and "
        "print per-provider stats and totals. Needs no keys and no network.",
        epilog=_examples(
            "llmlb demo",
            "llmlb demo --requests 1000 --strategy least-busy",
            "llmlb demo --scenario quota",
        ),
        formatter_class=_HelpFormatter,
    )
    demo.add_argument(
        "--requests",
        type=_positive_int,
        default=200,
        metavar="N",
        help="prompts to send (default 200)",
    )
    demo.add_argument(
        "--concurrency",
        type=_positive_int,
        default=32,
        metavar="N",
        help="requests in flight (default 32)",
    )
    demo.add_argument(
        "--scenario",
        choices=("faults", "quota"),
        default="faults",
        help="faults (default): one provider is flaky; quota: providers with rate limits, "
        "paced to their pooled quota with no 429s",
    )
    _add_strategy(demo)
    _add_seed(demo)

    batch = commands.add_parser(
        "batch",
        help="answer a JSONL file of prompts into a JSONL file (resumable)",
        description="Read prompts from INPUT (one JSON object per line: "
        '{"id": ..., "prompt": ...} or with "messages", plus optional system, max_tokens, '
        "temperature, top_p, stop and meta) and append one result or error line per "
        "prompt to OUTPUT, after a run header line.\n\n"
        "Rerunning the same command resumes: ids already answered are skipped. A resume "
        "must be the same job (the same input, grown at most, and the same providers), "
        "else it is refused. Only one run at a time may write an OUTPUT. Bad input lines "
        "are shown and become error lines (--strict refuses them); after --max-errors "
        "failed prompts in a row, or when every provider refused (a wrong key, an unknown "
        "model), the batch stops, leaving the rest for a resume.\n\n"
        "Exit status: 0 done (failed prompts are error lines in OUTPUT); 1 stopped "
        "early; 2 unusable files, bad config, bad lines with --strict, or a "
        "refused resume; 130 interrupted.",
        epilog=_examples(
            "llmlb batch prompts.jsonl -o answers.jsonl",
            "llmlb batch prompts.jsonl -o answers.jsonl --config eval.toml --seed 7",
            "llmlb batch prompts.jsonl -o answers.jsonl --restart",
        ),
        formatter_class=_HelpFormatter,
    )
    batch.add_argument("input", metavar="INPUT.jsonl", help="prompts, one JSON object per line")
    batch.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUTPUT.jsonl",
        help="results file (appended to; created if missing)",
    )
    _add_config(batch)
    batch.add_argument(
        "--concurrency",
        type=_positive_int,
        default=64,
        metavar="N",
        help="requests in flight (default 64)",
    )
    _add_strategy(batch)
    _add_seed(batch)
    _add_deadlines(batch)
    batch.add_argument(
        "--max-errors",
        type=_positive_int,
        default=DEFAULT_MAX_ERRORS,
        metavar="N",
        help=f"stop after N failed prompts in a row (default {DEFAULT_MAX_ERRORS})",
    )
    batch.add_argument(
        "--strict",
        action="store_true",
        help="refuse to start if any input line is bad (nothing is sent)",
    )
    resume = batch.add_mutually_exclusive_group()
    resume.add_argument(
        "--force-resume",
        action="store_true",
        help="resume although the input or the providers differ from the earlier run",
    )
    resume.add_argument(
        "--restart",
        action="store_true",
        help="start OUTPUT over; the old file is kept as OUTPUT.bak",
    )
    batch.add_argument(
        "--ordered",
        action="store_true",
        help="write results in input order (default: as they complete)",
    )
    batch.add_argument(
        "--shard",
        type=_shard,
        metavar="K/N",
        help="answer only the ids of shard K of N (a stable hash of each id, independent of "
        "line order): run N processes, one per shard, each with its own --output",
    )
    batch.add_argument(
        "--shared-state",
        metavar="URL",
        help="redis://host:6379/0 (or rediss://): every process given the same URL draws "
        "on the same provider budgets (BalancerConfig.shared_state)",
    )
    batch.add_argument("-q", "--quiet", action="store_true", help="no progress output")

    bench = commands.add_parser(
        "bench",
        help="measure throughput, latency percentiles and TTFT",
        description="Send --requests prompts at --concurrency and report throughput, "
        "p50/p90/p99 latency, time to first token with --stream, the per-provider "
        "distribution and error counts. Against zero-latency simulated providers by "
        "default, which measures the balancer's own overhead.",
        epilog=_examples(
            "llmlb bench",
            "llmlb bench --requests 5000 --concurrency 256 --json",
            "llmlb bench --config prod.toml --stream --timeout 30",
        ),
        formatter_class=_HelpFormatter,
    )
    _add_config(bench)
    bench.add_argument(
        "--concurrency",
        type=_positive_int,
        default=64,
        metavar="N",
        help="requests in flight (default 64)",
    )
    bench.add_argument(
        "--requests",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="requests to send (default 1000)",
    )
    bench.add_argument("--stream", action="store_true", help="stream answers; adds TTFT")
    bench.add_argument("--json", action="store_true", help="print one JSON object, no progress")
    _add_strategy(bench)
    _add_seed(bench)
    _add_deadlines(bench)

    health = commands.add_parser(
        "health",
        help="probe every provider; exit status 1 if any is down",
        description="Probe every configured provider now, concurrently, and print a "
        "table. The exit status is 1 if any provider is down, 0 otherwise.",
        epilog=_examples("llmlb health", "llmlb health --config prod.toml && llmlb batch ..."),
        formatter_class=_HelpFormatter,
    )
    _add_config(health)

    sim = commands.add_parser(
        "sim",
        help="run the simulator alone on 127.0.0.1 until Ctrl-C",
        description="Serve simulated providers on 127.0.0.1 for use with any client "
        "(official SDKs, curl, `llmlb --config`). A matching TOML config goes to stdout "
        "(or to --write-config FILE); the base URLs and status lines go to stderr.",
        epilog=SPEC_HELP
        + f"\n\nDefault SPEC:\n  {DEFAULT_SIM_SPEC}\n\n"
        + _examples(
            "llmlb sim",
            "llmlb sim --write-config sim.toml",
            "llmlb sim --providers fast:openai:latency=0.01,flaky:anthropic:503=0.2",
        ),
        formatter_class=_HelpFormatter,
    )
    sim.add_argument(
        "--port",
        type=_port,
        default=0,
        metavar="N",
        help="first port; the providers use N, N+1, ... (default: free ports)",
    )
    sim.add_argument(
        "--providers",
        default=DEFAULT_SIM_SPEC,
        metavar="SPEC",
        help="simulated providers (default: the three below)",
    )
    sim.add_argument(
        "--write-config",
        metavar="FILE",
        help="write the config to FILE instead of stdout",
    )
    return parser


def _command(name: str) -> Callable[[argparse.Namespace], Awaitable[int]]:
    # Imported on use: `llmlb --help` should not pay for rich or the simulator.
    if name == "demo":
        from ._cli.demo import run_demo

        return run_demo
    if name == "health":
        from ._cli.health import run_health

        return run_health
    if name == "batch":
        from ._cli.batch import run_batch

        return run_batch
    if name == "bench":
        from ._cli.bench import run_bench

        return run_bench
    from ._cli.sim import run_sim

    return run_sim


def _leaf(exc: BaseException, types: tuple[type[BaseException], ...]) -> BaseException | None:
    """``exc``, or the first exception of ``types`` inside an exception group."""
    if isinstance(exc, types):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _leaf(inner, types)
            if found is not None:
                return found
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``llmlb``; returns the exit status (the console script exits with it)."""
    import trio

    from ._cli.errors import CommandError
    from ._cli.logs import cli_logging
    from ._errors import ConfigError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "sim":
        from ._cli.fleets import parse_providers

        try:
            parse_providers(args.providers, base_port=args.port)
        except ValueError as exc:
            parser.error(f"--providers: {exc}")
    run = _command(args.command)
    try:
        with cli_logging():
            return trio.run(run, args)
    except BaseException as exc:
        failure = _leaf(exc, (ConfigError, CommandError))
        if failure is not None and _leaf(exc, (KeyboardInterrupt,)) is None:
            print(f"llmlb {args.command}: error: {failure}", file=sys.stderr)
            return failure.status if isinstance(failure, CommandError) else 2
        if _leaf(exc, (KeyboardInterrupt,)) is None:
            raise
        if args.command == "sim":
            print("llmlb sim: simulator stopped", file=sys.stderr)
        else:
            hint = "; rerun the same command to resume" if args.command == "batch" else ""
            print(f"llmlb {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
