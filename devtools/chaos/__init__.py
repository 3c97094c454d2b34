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

import asyncio
import logging
import shlex
import signal
import sys
from collections.abc import Sequence

from devtools.chaos.options import parse_options
from paygate.settings import Settings

__all__ = ["main", "run_chaos_command"]

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130

log = logging.getLogger("devtools.chaos")


async def run_chaos_command(settings: Settings, argv: Sequence[str]) -> int:
    """Run with ``settings`` as the base (its ``KAFKA_BOOTSTRAP_SERVERS`` picks the broker)."""
    from devtools.chaos.run import run_chaos

    options = parse_options(argv)
    command_line = shlex.join(getattr(sys, "orig_argv", sys.argv))
    # SIGTERM ends the run like Ctrl-C does: cancelled, so every child is cleaned up.
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await run_chaos(options, settings, command_line)
    except asyncio.CancelledError:
        print("chaos run interrupted; every process it started was stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        log.exception("chaos run failed")
        print(f"chaos run could not complete: {exc}", file=sys.stderr)
        return EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    _configure_logging()
    try:
        return asyncio.run(run_chaos_command(Settings(), args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _configure_logging() -> None:
    """Progress as plain text on stderr; the table goes to stdout."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # The feeder's client logs every refused connection while the broker restarts; the
    # feeder reports its resends itself.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
