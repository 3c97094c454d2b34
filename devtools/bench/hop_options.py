"""The command line of ``python -m devtools.bench hops``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from devtools.bench.options import _positive_float, _positive_int


@dataclass(frozen=True, slots=True)
class HopOptions:
    rate_per_s: float
    count: int
    warmup: int
    wait_s: int
    timeout_s: float
    database_url: str | None
    baseline: Path | None
    marks: Path | None = None


def parse_hop_options(argv: Sequence[str]) -> HopOptions:
    """The options, or exit 2 with argparse's message (a baseline that is not a paygate
    checkout is refused here, before a broker is started for nothing)."""
    parser = argparse.ArgumentParser(
        prog="python -m devtools.bench hops",
        description="Where a create-and-wait's time goes: POST /v1/payments with Prefer: "
        "wait at a constant rate (open loop: each request sent on schedule, never waiting "
        "for the one before), against paygate run as production runs it (consumer and "
        "facade processes, a real broker); then each request's latency split into hops "
        "by the timestamps Kafka and the store already hold. Uses KAFKA_BOOTSTRAP_SERVERS "
        "when set, else starts a local broker.",
    )
    parser.add_argument(
        "--rate", type=_positive_float, default=50.0, help="requests/s offered (default 50)"
    )
    parser.add_argument(
        "--count", type=_positive_int, default=500, help="requests reported (default 500)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=10,
        help="requests sent first at the same rate, not reported (default 10)",
    )
    parser.add_argument(
        "--wait", type=_positive_int, default=10, help="the Prefer: wait=N of every request"
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=15.0,
        help="seconds the client waits for an answer before counting a failure (default 15)",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="a PostgreSQL URL (postgresql+asyncpg://...): each stack gets a new database "
        "on that server, dropped afterwards; default: a new SQLite file per stack",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        metavar="DIR",
        help="another checkout of paygate (e.g. a git archive export of the commit before "
        "a change): its consumer and facade are measured first, in the same run",
    )
    parser.add_argument(
        "--marks",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write each reported request's marks (epoch seconds) to FILE, one JSON "
        "object a line, for a closer look or a plot",
    )
    args = parser.parse_args(list(argv))
    baseline: Path | None = args.baseline
    if baseline is not None:
        baseline = baseline.resolve()
        if not (baseline / "paygate" / "cli.py").is_file():
            parser.error(f"--baseline {baseline}: not a paygate checkout")
    return HopOptions(
        rate_per_s=args.rate,
        count=args.count,
        warmup=max(0, args.warmup),
        wait_s=args.wait,
        timeout_s=args.timeout,
        database_url=args.database_url,
        baseline=baseline,
        marks=args.marks,
    )
