"""A provider whose calls wait for the test to let them through, to hold work in flight."""

from __future__ import annotations

import asyncio
import uuid

from providers.charge_only import ChargeOnlyProvider
from providers.port import ChargeOutcome, ChargeRequest, ChargeStatus


class GatedProvider(ChargeOnlyProvider):
    """Charges succeed once ``gate`` is open (or after ``delay_s``); counts charges per key.
    Only charges: the tests that use it hold charges in flight."""

    def __init__(
        self, *, delay_s: float = 0.0, open_gate: bool = True, hold_marked_only: bool = False
    ) -> None:
        super().__init__()
        self.hold_marked_only = hold_marked_only
        self.gate = asyncio.Event()
        if open_gate:
            self.gate.set()
        self.delay_s = delay_s
        self.started: list[str] = []
        self.charges: dict[str, int] = {}
        self.running = 0
        self.max_running = 0
        self.timeline: list[tuple[str, str]] = []  # ("start" | "end", payment id)

    @property
    def name(self) -> str:
        return "gated"

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        self.timeline.append(("start", request.payment_request_id))
        try:
            return await self._charge(request)
        finally:
            self.running -= 1
            self.timeline.append(("end", request.payment_request_id))

    async def _charge(self, request: ChargeRequest) -> ChargeOutcome:
        self.started.append(request.payment_request_id)
        # Only commands marked {"hold": ...} wait for the gate when hold_marked_only is set.
        if not self.hold_marked_only or "hold" in request.metadata:
            await self.gate.wait()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        # Idempotent by attempt key, as real providers are.
        known = self.outcomes.get(request.attempt_key)
        if known is not None:
            return known
        outcome = ChargeOutcome(ChargeStatus.SUCCEEDED, f"ch_{uuid.uuid4().hex[:12]}")
        self.outcomes[request.attempt_key] = outcome
        self.charges[request.payment_request_id] = (
            self.charges.get(request.payment_request_id, 0) + 1
        )
        return outcome
