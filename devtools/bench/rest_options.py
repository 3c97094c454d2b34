"""The command line of ``python -m devtools.bench rest``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from devtools.bench.options import _positive_float, _positive_int


@dataclass(frozen=True, slots=True)
class RestOptions:
    rates: tuple[int, ...]
    duration_s: float
    workers: tuple[int, ...]
    wait_s: int
    timeout_s: float
    database_url: str | None
    baseline: Path | None
    ceiling: bool
    warmup_s: float
    pause_s: float
    profile_dir: Path | None = None
    uvloop: bool = False
    rate_limit_writes: bool = False


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"a comma-separated list of integers: {text!r}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"a comma-separated list of integers >= 1: {text!r}")
    return values


def parse_rest_options(argv: Sequence[str]) -> RestOptions:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.bench rest",
        description="POST /v1/payments with Prefer: wait, unique orders, at a series of "
        "constant offered rates (vegeta, open loop), against paygate run as production "
        "runs it (consumer and facade processes, a real broker) and against a bare aiohttp "
        "TLS handler, the ceiling. Uses KAFKA_BOOTSTRAP_SERVERS when set, else starts a "
        "local broker.",
    )
    parser.add_argument(
        "--rates",
        type=_int_list,
        default=(50, 100, 200, 500, 1000),
        help="offered requests/s of the steps, in order (default 50,100,200,500,1000)",
    )
    parser.add_argument(
        "--duration", type=_positive_float, default=10.0, help="seconds per step (default 10)"
    )
    parser.add_argument(
        "--workers",
        type=_int_list,
        default=(1,),
        help="facade worker processes; a list measures each in turn (default 1)",
    )
    parser.add_argument(
        "--wait", type=_positive_int, default=10, help="the Prefer: wait=N of every request"
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=15.0,
        help="seconds vegeta waits for an answer before counting an error (default 15)",
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
        help="another checkout of paygate (e.g. a git worktree of the commit before a "
        "change): its consumer and facade are measured first, in the same run",
    )
    parser.add_argument("--no-ceiling", action="store_true", help="skip the bare aiohttp handler")
    parser.add_argument(
        "--warmup",
        type=_positive_float,
        default=3.0,
        help="seconds at 20/s before a stack's first step, not reported (default 3)",
    )
    parser.add_argument(
        "--pause",
        type=float,
        default=3.0,
        help="seconds between steps, for the previous step's stragglers (default 3)",
    )
    parser.add_argument(
        "--uvloop",
        action="store_true",
        help="also measure the facade with one worker on PAYGATE_EVENT_LOOP=uvloop",
    )
    parser.add_argument(
        "--rate-limit-writes",
        action="store_true",
        help="also measure the facade with one worker whose rate limit leases one token at "
        "a time (burst 10 at 10^6/s: never refused, one bucket write per request), the "
        "shared limit's worst case",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="record each paygate step with py-spy (pip install py-spy) into DIR, sampling "
        "the thread holding the GIL (Python CPU): collapsed stacks (.txt) per step, for "
        "flamegraph.pl or speedscope; keep DIR out of the repo. Sampling slows the facade: "
        "compare figures of runs without it",
    )
    args = parser.parse_args(list(argv))
    if args.baseline is not None and not (args.baseline / "paygate" / "cli.py").is_file():
        parser.error(f"--baseline {args.baseline} is not a paygate checkout")
    return RestOptions(
        rates=args.rates,
        duration_s=args.duration,
        workers=args.workers,
        wait_s=args.wait,
        timeout_s=args.timeout,
        database_url=args.database_url,
        baseline=args.baseline,
        ceiling=not args.no_ceiling,
        warmup_s=args.warmup,
        pause_s=max(0.0, args.pause),
        profile_dir=args.profile,
        uvloop=args.uvloop,
        rate_limit_writes=args.rate_limit_writes,
    )
