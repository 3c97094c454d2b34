"""A provider that certainly does not charge for its first few calls, then succeeds."""

from __future__ import annotations

import uuid

from providers.errors import (
    ProviderRateLimitedError,
    ProviderUnavailableError,
    UnsupportedOperationError,
)
from providers.port import (
    CaptureRequest,
    ChargeOutcome,
    ChargeRequest,
    ChargeStatus,
    RefundOutcome,
    RefundRequest,
)


class FlakyProvider:
    def __init__(self, failures: int, *, retry_after_s: float | None = None) -> None:
        self.failures_left = failures
        self.retry_after_s = retry_after_s
        self.calls: list[str] = []  # attempt keys, in call order
        self.outcomes: dict[str, ChargeOutcome] = {}

    @property
    def name(self) -> str:
        return "sandbox"

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    @property
    def charges(self) -> int:
        return len(self.outcomes)

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        self.calls.append(request.attempt_key)
        if self.failures_left > 0:
            self.failures_left -= 1
            if self.retry_after_s is not None:
                raise ProviderRateLimitedError("sandbox", "slow down", self.retry_after_s)
            raise ProviderUnavailableError("sandbox", "503 before processing")
        outcome = self.outcomes.get(request.attempt_key) or ChargeOutcome(
            ChargeStatus.SUCCEEDED, f"ch_{uuid.uuid4().hex[:12]}"
        )
        self.outcomes[request.attempt_key] = outcome
        return outcome

    async def charge_status(self, attempt_key: str) -> ChargeOutcome | None:
        return self.outcomes.get(attempt_key)

    async def charge_by_reference(self, provider_reference: str) -> ChargeOutcome | None:
        return next(
            (o for o in self.outcomes.values() if o.provider_reference == provider_reference), None
        )

    # This fake only charges: the tests that use it are about charge retries.
    async def capture(self, request: CaptureRequest) -> ChargeOutcome:
        raise UnsupportedOperationError(self.name, "capture is not supported")

    async def refund(self, request: RefundRequest) -> RefundOutcome:
        raise UnsupportedOperationError(self.name, "refunds are not supported")

    async def refund_status(self, refund_key: str, charge_reference: str) -> RefundOutcome | None:
        raise UnsupportedOperationError(self.name, "refunds are not supported")
