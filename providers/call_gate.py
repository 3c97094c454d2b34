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

from providers.port import (
    CancelRequest,
    CaptureRequest,
    ChargeOutcome,
    ChargeRequest,
    PaymentProvider,
    RefundOutcome,
    RefundRequest,
)


class GatedProvider:
    """``provider``, its calls taking a place of ``gate`` for as long as each runs.

    ``start``/``stop`` are not gated: they belong to the process's lifecycle, not its load.
    """

    def __init__(self, provider: PaymentProvider, gate: asyncio.Semaphore) -> None:
        self._provider = provider
        self._gate = gate

    @property
    def name(self) -> str:
        return self._provider.name

    async def start(self) -> None:
        await self._provider.start()

    async def stop(self) -> None:
        await self._provider.stop()

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        async with self._gate:
            return await self._provider.charge(request)

    async def charge_status(self, attempt_key: str) -> ChargeOutcome | None:
        async with self._gate:
            return await self._provider.charge_status(attempt_key)

    async def charge_by_reference(self, provider_reference: str) -> ChargeOutcome | None:
        async with self._gate:
            return await self._provider.charge_by_reference(provider_reference)

    async def close_charge(self, attempt_key: str) -> ChargeOutcome | None:
        async with self._gate:
            return await self._provider.close_charge(attempt_key)

    async def capture(self, request: CaptureRequest) -> ChargeOutcome:
        async with self._gate:
            return await self._provider.capture(request)

    async def cancel(self, request: CancelRequest) -> ChargeOutcome:
        async with self._gate:
            return await self._provider.cancel(request)

    async def refund(self, request: RefundRequest) -> RefundOutcome:
        async with self._gate:
            return await self._provider.refund(request)

    async def refund_status(self, refund_key: str, charge_reference: str) -> RefundOutcome | None:
        async with self._gate:
            return await self._provider.refund_status(refund_key, charge_reference)
