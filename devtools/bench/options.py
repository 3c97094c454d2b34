"""The bench's command line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from paygate.settings import EventLoop, Settings

CASES = ("a", "b", "c")


@dataclass(frozen=True, slots=True)
class BenchOptions:
    payments: int
    slow_payments: int
    partitions: int
    database_url: str | None
    cases: tuple[str, ...]
    provider_delay_s: float
    stall_timeout_s: float
    compare_sqlite_synchronous: bool = False
    scale_out: tuple[int, ...] = ()
    compare_tokens: bool = False
    # Another checkout whose code runs the same cases first (devtools/bench/baseline.py).
    baseline: Path | None = None
    # The loop this run's cases run on; the baseline's, when --baseline-event-loop names one.
    event_loop: EventLoop = EventLoop.ASYNCIO
    baseline_event_loop: EventLoop | None = None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {value}")
    return value


def _cases(text: str) -> tuple[str, ...]:
    wanted = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(wanted) - set(CASES))
    if unknown or not wanted:
        raise argparse.ArgumentTypeError(f"cases are a comma-separated subset of a,b,c: {text!r}")
    # Always in a, b, c order: the baseline first, as the report reads.
    return tuple(case for case in CASES if case in wanted)


def _process_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"a comma-separated list of process counts: {text!r}")
    return counts


def parse_options(argv: Sequence[str]) -> BenchOptions:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.bench",
        description="Throughput of the payment pipeline beside a bare aiokafka loop, "
        "measured in one run on one broker. Uses KAFKA_BOOTSTRAP_SERVERS when set, "
        "else starts a local broker.",
    )
    parser.add_argument(
        "--payments",
        type=_positive_int,
        default=20_000,
        help="commands consumed by cases a and b (default 20000)",
    )
    parser.add_argument(
        "--slow-payments",
        type=_positive_int,
        default=5_000,
        help="commands consumed by case c, the slow provider (default 5000)",
    )
    parser.add_argument(
        "--partitions",
        type=_positive_int,
        default=3,
        help="partitions of every topic the bench creates (default 3)",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="SQLAlchemy async URL for cases b and c (e.g. postgresql+asyncpg://...); "
        "default: a fresh SQLite file per case",
    )
    parser.add_argument(
        "--cases", type=_cases, default=CASES, help="which cases to run (default a,b,c)"
    )
    parser.add_argument(
        "--provider-delay",
        type=_positive_float,
        default=0.1,
        help="seconds the slow provider of case c takes per call (default 0.1)",
    )
    parser.add_argument(
        "--stall-timeout",
        type=_positive_float,
        default=60.0,
        help="give up on a case when no message made progress for this long (default 60 s)",
    )
    parser.add_argument(
        "--compare-sqlite-synchronous",
        action="store_true",
        help="run case b twice, with PAYGATE_SQLITE_SYNCHRONOUS=full (b) and =normal "
        "(b-normal), and print their ratio; SQLite only",
    )
    parser.add_argument(
        "--scale-out",
        type=_process_counts,
        default=(),
        help="after the cases, run the pipeline with each of these numbers of consumer "
        "processes in one group (e.g. 1,2,4), --payments commands each, instant provider; "
        "needs a PostgreSQL --database-url",
    )
    parser.add_argument(
        "--compare-tokens",
        action="store_true",
        help="run case b again as b-tokens, its commands naming accounts by vault token "
        "instead of by clear number, and print ratio b-tokens/b",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="another checkout of paygate (e.g. a git worktree of the commit before a "
        "change): the same cases run first from its code, on the same broker, and the "
        "summary sets its rates and CPU per payment beside this run's",
    )
    loops = [loop.value for loop in EventLoop]
    parser.add_argument(
        "--event-loop",
        choices=loops,
        default=None,
        help="event loop the cases run on (the pipeline runs in the bench's process); "
        "default: PAYGATE_EVENT_LOOP, as in production",
    )
    parser.add_argument(
        "--baseline-event-loop",
        choices=loops,
        default=None,
        help="with --baseline: the baseline runs on this event loop (e.g. --baseline . "
        "--baseline-event-loop asyncio --event-loop uvloop sets the two loops side by side)",
    )
    args = parser.parse_args(list(argv))
    if args.baseline_event_loop is not None and args.baseline is None:
        parser.error("--baseline-event-loop needs --baseline")
    if args.scale_out and (
        args.database_url is None or not args.database_url.startswith("postgresql")
    ):
        parser.error("--scale-out needs a PostgreSQL --database-url (processes share it)")
    if args.compare_tokens and "b" not in args.cases:
        parser.error("--compare-tokens needs case b")
    if args.compare_sqlite_synchronous:
        if "b" not in args.cases:
            parser.error("--compare-sqlite-synchronous needs case b")
        if args.database_url is not None and not args.database_url.startswith("sqlite"):
            parser.error("--compare-sqlite-synchronous needs SQLite (leave out --database-url)")
    return BenchOptions(
        payments=args.payments,
        slow_payments=args.slow_payments,
        partitions=args.partitions,
        database_url=args.database_url,
        cases=args.cases,
        provider_delay_s=args.provider_delay,
        stall_timeout_s=args.stall_timeout,
        compare_sqlite_synchronous=args.compare_sqlite_synchronous,
        scale_out=args.scale_out,
        compare_tokens=args.compare_tokens,
        baseline=args.baseline,
        event_loop=(
            Settings().event_loop if args.event_loop is None else EventLoop(args.event_loop)
        ),
        baseline_event_loop=(
            None if args.baseline_event_loop is None else EventLoop(args.baseline_event_loop)
        ),
    )
