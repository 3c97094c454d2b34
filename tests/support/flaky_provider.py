"""A provider that certainly does not charge for its first few calls, then succeeds."""

from __future__ import annotations

import uuid

from providers.charge_only import ChargeOnlyProvider
from providers.errors import ProviderRateLimitedError, ProviderUnavailableError
from providers.port import ChargeOutcome, ChargeRequest, ChargeStatus


class FlakyProvider(ChargeOnlyProvider):
    """Only charges: the tests that use it are about charge retries."""

    def __init__(self, failures: int, *, retry_after_s: float | None = None) -> None:
        super().__init__()
        self.failures_left = failures
        self.retry_after_s = retry_after_s
        self.calls: list[str] = []  # attempt keys, in call order

    @property
    def name(self) -> str:
        return "sandbox"

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
