"""A :class:`providers.port.PaymentProvider` for the bench: every charge succeeds.

With ``delay_s == 0`` it answers without yielding to the event loop, so case b measures
the pipeline and nothing else; with a delay it stands for a slow acquirer (case c). It
records when the first call started and the last one returned, which splits a case's
time into "charging" and "publishing the last results".
"""

from __future__ import annotations

import asyncio
import time

from providers.charge_only import ChargeOnlyProvider
from providers.port import ChargeOutcome, ChargeRequest, ChargeStatus


class BenchProvider(ChargeOnlyProvider):
    """Only charges: the bench measures the charge pipeline."""

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__()
        self._delay_s = delay_s
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.first_call_at: float | None = None
        # The process's CPU time (all threads) at the first call, beside first_call_at.
        self.first_call_cpu: float | None = None
        self.first_call_wall: float | None = None
        self.last_return_at: float | None = None

    @property
    def name(self) -> str:
        return "bench"

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        now = time.perf_counter()
        if self.first_call_at is None:
            self.first_call_at = now
            self.first_call_cpu = time.process_time()
            # Wall clock: comparable across the processes of a scale-out run.
            self.first_call_wall = time.time()
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self._delay_s > 0:
                await asyncio.sleep(self._delay_s)
        finally:
            self.in_flight -= 1
        # Idempotent per attempt key, as the port requires.
        outcome = self.outcomes.setdefault(
            request.attempt_key,
            ChargeOutcome(ChargeStatus.SUCCEEDED, f"bench-{len(self.outcomes) + 1}"),
        )
        self.last_return_at = time.perf_counter()
        return outcome
