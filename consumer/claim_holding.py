"""Running a piece of work while holding a row's claim (see persistence.claims).

A worker stopped meanwhile (a drain, a shutdown, an error) gives the claim up, so the next
owner need not wait for it to expire; one that dies keeps it until then. Either way the next
owner re-sends the same key, so giving the claim up early is only ever a gain in liveness.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

log = logging.getLogger("paygate.consumer")

T = TypeVar("T")


async def holding_claim(work: Awaitable[T], release: Callable[[], Awaitable[None]]) -> T:
    """``await work``; if it raises (cancellation included), ``release()`` first."""
    try:
        return await work
    except BaseException:
        try:
            await asyncio.shield(release())
        except Exception:  # the database may be what failed: the claim then expires
            log.warning("claim not released; it expires on its own")
        raise
