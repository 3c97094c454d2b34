"""Runs a housekeeping job every so often until told to stop; a failed run is logged only."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("paygate.housekeeping")


async def run_periodically(
    stop: asyncio.Event, interval_s: float, job: Callable[[], Awaitable[int]], what: str
) -> None:
    """Run ``job`` now and then every ``interval_s``; log how many rows it touched."""
    while not stop.is_set():
        try:
            touched = await job()
            if touched:
                log.info("%s: %d", what, touched, extra={"job": what, "rows": touched})
        except Exception:
            log.exception("%s failed; will run again", what)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
