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

from collections.abc import Sequence

from devtools.outage.options import parse_options
from devtools.verdict_run import command_main, run_as_command
from paygate.settings import Settings

__all__ = ["main"]


async def run_outage_command(settings: Settings, argv: Sequence[str]) -> int:
    """Run with ``settings`` as the base (its ``KAFKA_BOOTSTRAP_SERVERS`` picks the broker)."""
    from devtools.outage.run import run_outage

    options = parse_options(argv)
    return await run_as_command(
        "outage", lambda command_line: run_outage(options, settings, command_line)
    )


def main(argv: Sequence[str] | None = None) -> int:
    return command_main(run_outage_command, argv)
