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

A place can be taken ahead of a call (:func:`a_place_at`), for a caller that must check
something right before its call goes out and not before its wait for the place: a holder
of a claim renews it once it has its place, since the wait is bounded by no lease (the
gate full of calls each up to the provider timeout). The call made holding it takes no
second place.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import TypeVar

from providers.delegating import DelegatingProvider
from providers.port import PaymentProvider

_T = TypeVar("_T")

# The gate a place of which the current task holds (a_place_at), if any.
_placed: ContextVar[asyncio.Semaphore | None] = ContextVar("placed_at_gate", default=None)


class GatedProvider(DelegatingProvider):
    """``provider``, its calls taking a place of ``gate`` for as long as each runs.

    ``start``/``stop`` are not gated: they belong to the process's lifecycle, not its load.
    Every other call of the port is, whether it moves money or only asks.
    """

    def __init__(self, provider: PaymentProvider, gate: asyncio.Semaphore) -> None:
        super().__init__(provider)
        self._gate = gate

    @property
    def gate(self) -> asyncio.Semaphore:
        return self._gate

    async def _moving_money(self, call: Callable[[], Awaitable[_T]]) -> _T:
        return await self._in_a_place(call)

    async def _asking(self, call: Callable[[], Awaitable[_T]]) -> _T:
        return await self._in_a_place(call)

    async def _in_a_place(self, call: Callable[[], Awaitable[_T]]) -> _T:
        if _placed.get() is self._gate:  # taken ahead by a_place_at
            return await call()
        async with self._gate:
            return await call()


@asynccontextmanager
async def a_place_at(provider: PaymentProvider) -> AsyncIterator[None]:
    """Hold a place at ``provider``'s gate (none to hold when it is not gated) until the
    block ends; its calls made in the block take no other (see the module docstring).
    Only around what must follow the wait and the call itself, as for a call: never
    while holding a database transaction or lock."""
    if not isinstance(provider, GatedProvider) or _placed.get() is provider.gate:
        yield
        return
    async with provider.gate:
        taken = _placed.set(provider.gate)
        try:
            yield
        finally:
            _placed.reset(taken)
