"""Starting clients of services that may not be up yet (a broker restarting, say)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("paygate")


async def start_with_retry(
    start: Callable[[], Awaitable[None]],
    what: str,
    *,
    give_up_after_s: float = 120.0,
    max_backoff_s: float = 5.0,
) -> None:
    """Call ``start`` until it succeeds, backing off; re-raise after ``give_up_after_s``.

    A consumer started while Kafka restarts should wait for it, not exit: a supervisor
    restarting a crashing process achieves the same, slower and with noisier logs.
    """
    deadline = time.monotonic() + give_up_after_s
    backoff = 0.2
    while True:
        try:
            await start()
            return
        except Exception as exc:
            if time.monotonic() + backoff > deadline:
                raise
            log.warning("%s not reachable yet (%s); retrying in %.1fs", what, exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff_s)
