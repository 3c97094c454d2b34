"""The command line of ``python -m devtools.bench refunds`` and ``captures``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from devtools.bench.options import _positive_float, _positive_int


@dataclass(frozen=True, slots=True)
class RefundOptions:
    count: int
    baseline: Path | None
    stall_timeout_s: float


_DESCRIPTIONS: Final = {
    "refunds": "N payments, then one refund for each",
    "captures": "2N authorize-only payments, then a partial capture of N of them and a "
    "cancel of the other N",
}
_COUNTS: Final = {
    "refunds": "payments of phase p, and refunds of phase r (one per payment)",
    "captures": "captures of phase c and cancels of phase x (phase p authorizes twice as many)",
}


def parse_refund_options(argv: Sequence[str], mode: str = "refunds") -> RefundOptions:
    """The options, or exit 2 with argparse's message (a baseline that is not a paygate
    checkout is refused here, before a broker is started for nothing)."""
    parser = argparse.ArgumentParser(
        prog=f"python -m devtools.bench {mode}",
        description=(
            f"{_DESCRIPTIONS[mode]}, through ConsumerService on one SQLite "
            "file and one broker: CPU and SQL statements per command of each phase, the "
            "final states, and with --baseline the same run from another checkout beside it."
        ),
    )
    parser.add_argument(
        "--count",
        type=_positive_int,
        default=1000,
        help=f"{_COUNTS[mode]}; default 1000",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        metavar="DIR",
        help="another checkout (e.g. a git archive export of the commit before a change) "
        "whose code runs the same measurement first, on the same broker",
    )
    parser.add_argument(
        "--stall-timeout",
        dest="stall_timeout_s",
        type=_positive_float,
        default=60.0,
        help="give up on a phase when no result arrives for this many seconds; default 60",
    )
    args = parser.parse_args(list(argv))
    baseline: Path | None = args.baseline
    if baseline is not None:
        baseline = baseline.resolve()
        if not (baseline / "persistence").is_dir() or not (baseline / "devtools").is_dir():
            parser.error(f"--baseline {baseline}: not a paygate checkout")
    return RefundOptions(args.count, baseline, args.stall_timeout_s)
