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
of a claim confirms it once it has its place (consumer.claimed_calls), since the wait is
bounded by no lease (the gate full of calls each up to the provider timeout). The call
made holding it takes no second place.

A place is the task's that took it, not its context's: a task created inside the block
copies the context, and would otherwise call through on a place it does not hold (its
calls then beyond the limit, and a place freed under it when the block ends). So the mark
names the task, and another task's calls wait for a place of their own. The gate is
found at any depth of wrappers (providers.delegating: a circuit breaker around the gated
provider, or the gate around the breaker), so a place is taken ahead whichever way the
registry layered them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from providers.delegating import DelegatingProvider
from providers.port import PaymentProvider

_T = TypeVar("_T")

# The gate a place of which was taken ahead (a_place_at), and the task that took it: a task
# created inside the block inherits the variable, not the place.
_placed: ContextVar[tuple[asyncio.Semaphore, asyncio.Task[Any] | None] | None] = ContextVar(
    "placed_at_gate", default=None
)


def _holds_a_place_at(gate: asyncio.Semaphore) -> bool:
    """Whether the current task took a place at ``gate`` ahead (a_place_at) and holds it."""
    placed = _placed.get()
    return placed is not None and placed[0] is gate and placed[1] is asyncio.current_task()


def gate_of(provider: PaymentProvider) -> asyncio.Semaphore | None:
    """The call gate of ``provider``, found through any wrappers around it; None when its
    calls are not gated."""
    while isinstance(provider, DelegatingProvider):
        if isinstance(provider, GatedProvider):
            return provider.gate
        provider = provider.inner
    return None


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
        if _holds_a_place_at(self._gate):  # taken ahead by this task (a_place_at)
            return await call()
        async with self._gate:
            return await call()


@asynccontextmanager
async def a_place_at(provider: PaymentProvider) -> AsyncIterator[None]:
    """Hold a place at ``provider``'s gate (none to hold when it is not gated) until the
    block ends; the calls this task makes in the block take no other (see the module
    docstring). Only around what must follow the wait and the call itself, as for a call:
    never while holding a database transaction or lock."""
    gate = gate_of(provider)
    if gate is None or _holds_a_place_at(gate):
        yield
        return
    async with gate:
        taken = _placed.set((gate, asyncio.current_task()))
        try:
            yield
        finally:
            _placed.reset(taken)
