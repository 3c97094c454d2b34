"""The outage run's command line, parsed into one frozen :class:`OutageOptions`."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PROG = "python -m devtools.outage"
SIGNALS = ("kill", "term")


@dataclass(frozen=True, slots=True)
class OutageOptions:
    outage_s: float = 20.0
    rate: float = 20.0  # payments per second, steady
    before_s: float = 5.0  # feeding before the acquirer is killed
    after_s: float = 10.0  # feeding after it is back
    signal: str = "kill"
    drain_timeout_s: float = 300.0
    work_dir: Path | None = None
    keep_work_dir: bool = False

    @property
    def feed_s(self) -> float:
        return self.before_s + self.outage_s + self.after_s


def build_parser() -> argparse.ArgumentParser:
    defaults = OutageOptions()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Feed payments at a steady rate through a real consumer while the sandbox "
        "acquirer is down, then count what failed, what was charged twice and how long the "
        "backlog took to drain.",
    )
    add = parser.add_argument
    add("--outage-s", type=float, default=defaults.outage_s, help="seconds the acquirer is down")
    add("--rate", type=float, default=defaults.rate, help="payments per second, all the run")
    add("--before-s", type=float, default=defaults.before_s, help="feeding before the outage")
    add("--after-s", type=float, default=defaults.after_s, help="feeding after the outage")
    add(
        "--signal",
        choices=SIGNALS,
        default=defaults.signal,
        help="kill: SIGKILL, calls in flight are cut (in doubt); term: SIGTERM, they finish",
    )
    add(
        "--drain-timeout-s",
        type=float,
        default=defaults.drain_timeout_s,
        help="bound on waiting, after the feed, for every payment to be final",
    )
    add("--work-dir", type=Path, default=None, help="logs, store, ledger (default: a temp dir)")
    add(
        "--keep-work-dir",
        action="store_true",
        help="keep the temp work dir even when the run passes",
    )
    return parser


def parse_options(argv: Sequence[str]) -> OutageOptions:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    numbers = {
        "--outage-s": args.outage_s,
        "--rate": args.rate,
        "--before-s": args.before_s,
        "--after-s": args.after_s,
        "--drain-timeout-s": args.drain_timeout_s,
    }
    for flag, value in numbers.items():
        if not (math.isfinite(value) and value > 0):
            parser.error(f"{flag} must be a positive number")
    return OutageOptions(
        outage_s=args.outage_s,
        rate=args.rate,
        before_s=args.before_s,
        after_s=args.after_s,
        signal=args.signal,
        drain_timeout_s=args.drain_timeout_s,
        work_dir=args.work_dir,
        keep_work_dir=args.keep_work_dir,
    )
