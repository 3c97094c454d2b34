"""``paygate chaos``: a reproducible chaos run proving exactly-once effects.

Feeds thousands of payments, and refunds right behind a share of them, while consumers
are SIGKILLed and the broker restarts, then checks the acquirer's ledger, the store and the
results topic against each other: no payment charged twice, none lost, none left pending,
every one announced; no refund made twice or above what was captured, none lost, every
outcome announced and explained. See ``docs/reliability.md``.

    python -m devtools.chaos --payments 5000 --kills 10 --seed 1

Exit codes: 0 every check passed; 1 a check failed (the violations are listed); 2 the run
could not be carried out, so nothing was proven either way; 130 interrupted.
"""

from __future__ import annotations

from collections.abc import Sequence

from devtools.chaos.options import parse_options
from devtools.verdict_run import command_main, run_as_command
from paygate.settings import Settings

__all__ = ["main", "run_chaos_command"]


async def run_chaos_command(settings: Settings, argv: Sequence[str]) -> int:
    """Run with ``settings`` as the base (its ``KAFKA_BOOTSTRAP_SERVERS`` picks the broker)."""
    from devtools.chaos.run import run_chaos

    options = parse_options(argv)
    return await run_as_command(
        "chaos", lambda command_line: run_chaos(options, settings, command_line)
    )


def main(argv: Sequence[str] | None = None) -> int:
    return command_main(run_chaos_command, argv)
