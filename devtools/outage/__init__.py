"""``python -m devtools.outage``: how paygate rides out an outage of its provider.

Runs the consumer as a process against the sandbox acquirer (an HTTP process), feeds
payments at a steady rate, takes the acquirer down for ``--outage-s`` seconds (SIGKILL),
brings it back on the same port and ledger, and reports: payments failed, double charges
(the acquirer's ledger), and the time the backlog took to drain. See docs/reliability.md.

    python -m devtools.outage --outage-s 20
    python -m devtools.outage --outage-s 60

The consumer runs with the settings as shipped, or as ``PAYGATE_*`` in the environment
says, so the same command measures another retry budget or breaker: e.g.
``PAYGATE_CIRCUIT_FAILURE_THRESHOLD=0``. ``KAFKA_BOOTSTRAP_SERVERS`` names a broker to use;
unset, the run starts one of its own.

Exit codes: 0 every check passed; 1 a check failed; 2 the run could not be carried out;
130 interrupted.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import signal
import sys
from collections.abc import Sequence

from devtools.outage.options import parse_options
from paygate.settings import Settings

__all__ = ["main"]

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130

log = logging.getLogger("devtools.outage")


async def run_outage_command(settings: Settings, argv: Sequence[str]) -> int:
    from devtools.outage.run import run_outage

    options = parse_options(argv)
    command_line = shlex.join(getattr(sys, "orig_argv", sys.argv))
    task = asyncio.current_task()
    if task is not None:  # SIGTERM ends the run like Ctrl-C: every child is stopped
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await run_outage(options, settings, command_line)
    except asyncio.CancelledError:
        print("outage run interrupted; every process it started was stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        log.exception("outage run failed")
        print(f"outage run could not complete: {exc}", file=sys.stderr)
        return EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        return asyncio.run(run_outage_command(Settings(), args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
