"""A limit on the provider calls one process has in flight, whichever handler makes them.

Invariant: at most ``limit`` calls to the gated providers run at once; a caller waits for a
free place only around the call itself, never while it holds anything else the gate's
other callers need (no database transaction, no lock), so waiting here cannot deadlock.

Why apart from the runner's ``max_in_flight``: a command spends part of its time in the
database (the write-ahead begin, the outcome) and part at the provider. When the runner's
limit is the only one, every place held by a command in a database batch is a provider
call not made, and a slow provider's rate stays below ``max_in_flight / delay`` by the
share of time spent writing. With more commands admitted than calls allowed, the next
command's write-ahead runs while the earlier ones are at the provider, so the calls keep
the provider busy up to this limit (docs/performance.md has the measurements).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from providers.delegating import DelegatingProvider
from providers.port import PaymentProvider

_T = TypeVar("_T")


class GatedProvider(DelegatingProvider):
    """``provider``, its calls taking a place of ``gate`` for as long as each runs.

    ``start``/``stop`` are not gated: they belong to the process's lifecycle, not its load.
    Every other call of the port is, whether it moves money or only asks.
    """

    def __init__(self, provider: PaymentProvider, gate: asyncio.Semaphore) -> None:
        super().__init__(provider)
        self._gate = gate

    async def _moving_money(self, call: Callable[[], Awaitable[_T]]) -> _T:
        async with self._gate:
            return await call()

    async def _asking(self, call: Callable[[], Awaitable[_T]]) -> _T:
        async with self._gate:
            return await call()
