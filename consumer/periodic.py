"""Runs a housekeeping job every so often until told to stop; a failed run is logged only.

A job that fails because a dependency is down fails again at every interval for as long as
the outage lasts: those runs are logged as the outage (when it starts, a summary now and
then, when it ends), not with a traceback each. A failure of another kind is logged with
its traceback on the first failed run only, and counted in the summaries after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from consumer.failures import outage_of
from telemetry.outage_log import DependencyOutages

log = logging.getLogger("paygate.housekeeping")


async def run_periodically(
    stop: asyncio.Event, interval_s: float, job: Callable[[], Awaitable[int]], what: str
) -> None:
    """Run ``job`` now and then every ``interval_s``; log how many rows it touched."""
    outages = DependencyOutages(log, outage_of, fallback=f"{what}: a dependency")
    while not stop.is_set():
        try:
            touched = await job()
            outages.succeeded()
            if touched:
                log.info("%s: %d", what, touched, extra={"job": what, "rows": touched})
        except Exception as exc:
            outages.failed(exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
