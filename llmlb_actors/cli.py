"""The ``llmlb`` command: demo, batch, bench, health, sim.

``llmlb COMMAND --help`` documents each one; the README's "The `llmlb` command"
section has the file formats and worked examples. Each command lives in its own
module of the private ``_cli`` package; this module is the entry point and the
argument parser. Without ``--config`` every command runs
against the built-in simulator on 127.0.0.1, so nothing needs keys or network.

Exit status: 0 on success; 1 when ``health`` finds a provider down; 2 for
bad usage, a bad config file or bad input/output files; 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
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
        "--strategy", choices=_FILE_STRATEGIES, help="routing strategy (overrides the config)"
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
    from ._cli.fleets import DEFAULT_SIM_SPEC, SPEC_HELP

    parser = argparse.ArgumentParser(
        prog="llmlb",
        description="Load-balance LLM API calls across providers (a trio actor system). "
        "Without --config, commands run against the built-in loopback simulator.",
        epilog="Run `llmlb COMMAND --help` for each command's options.",
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
        "prompt to OUTPUT, after a run header line. Rerunning with the same OUTPUT "
        "skips ids already answered, so an interrupted or killed run resumes where it "
        "stopped; each line is written whole. Bad input lines become error lines with "
        "their line number and the batch goes on.",
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

    health = commands.add_parser(
        "health",
        help="probe every provider; exit status 1 if any is down",
        description="Probe every configured provider now, concurrently, and print a "
        "table. The exit status is 1 if any provider is down, 0 otherwise.",
    )
    _add_config(health)

    sim = commands.add_parser(
        "sim",
        help="run the simulator alone on 127.0.0.1 until Ctrl-C",
        description="Serve simulated providers on 127.0.0.1 for use with any client "
        "(official SDKs, curl, `llmlb --config`). Prints each provider's base URL "
        "and a matching config.",
        epilog=SPEC_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
        help=f"simulated providers (default: {DEFAULT_SIM_SPEC})",
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


def _interrupted(exc: BaseException) -> bool:
    if isinstance(exc, KeyboardInterrupt):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_interrupted(inner) for inner in exc.exceptions)
    return False


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``llmlb``; returns the exit status (the console script exits with it)."""
    import trio

    from ._cli.batch import BatchAbort
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
        return trio.run(run, args)
    except (ConfigError, BatchAbort) as exc:
        print(f"llmlb {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BaseException as exc:
        if not _interrupted(exc):
            raise
        if args.command == "sim":
            print("simulator stopped", file=sys.stderr)
            return 0
        hint = "; rerun the same command to resume" if args.command == "batch" else ""
        print(f"llmlb {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
