"""A :class:`providers.port.PaymentProvider` for the bench: every charge succeeds.

With ``delay_s == 0`` it answers without yielding to the event loop, so case b measures
the pipeline and nothing else; with a delay it stands for a slow acquirer (case c). It
records when the first call started and the last one returned, which splits a case's
time into "charging" and "publishing the last results".
"""

from __future__ import annotations

import asyncio
import time

from providers.errors import UnsupportedOperationError
from providers.port import (
    CaptureRequest,
    ChargeOutcome,
    ChargeRequest,
    ChargeStatus,
    RefundOutcome,
    RefundRequest,
)


class BenchProvider:
    def __init__(self, delay_s: float = 0.0) -> None:
        self._delay_s = delay_s
        self._outcomes: dict[str, ChargeOutcome] = {}
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.first_call_at: float | None = None
        self.last_return_at: float | None = None

    @property
    def name(self) -> str:
        return "bench"

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        now = time.perf_counter()
        if self.first_call_at is None:
            self.first_call_at = now
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self._delay_s > 0:
                await asyncio.sleep(self._delay_s)
        finally:
            self.in_flight -= 1
        # Idempotent per attempt key, as the port requires.
        outcome = self._outcomes.setdefault(
            request.attempt_key,
            ChargeOutcome(ChargeStatus.SUCCEEDED, f"bench-{len(self._outcomes) + 1}"),
        )
        self.last_return_at = time.perf_counter()
        return outcome

    async def charge_status(self, attempt_key: str) -> ChargeOutcome | None:
        return self._outcomes.get(attempt_key)

    async def charge_by_reference(self, provider_reference: str) -> ChargeOutcome | None:
        return next(
            (o for o in self._outcomes.values() if o.provider_reference == provider_reference), None
        )

    # This fake only charges: the bench measures the charge pipeline.
    async def capture(self, request: CaptureRequest) -> ChargeOutcome:
        raise UnsupportedOperationError(self.name, "capture is not supported")

    async def refund(self, request: RefundRequest) -> RefundOutcome:
        raise UnsupportedOperationError(self.name, "refunds are not supported")

    async def refund_status(self, refund_key: str, charge_reference: str) -> RefundOutcome | None:
        raise UnsupportedOperationError(self.name, "refunds are not supported")
