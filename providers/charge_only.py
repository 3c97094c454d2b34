"""A base for providers that only charge: test doubles and the bench's provider.

It keeps the outcome of every attempt, so status by attempt key and by provider reference
answer from what was charged, as the port requires; capture, cancel and refunds raise
:class:`providers.errors.UnsupportedOperationError`. A subclass implements ``name`` and
``charge``, and records each outcome in ``outcomes``.
"""

from __future__ import annotations

from datetime import timedelta

from providers.errors import UnsupportedOperationError
from providers.port import (
    CancelRequest,
    CaptureRequest,
    ChargeOutcome,
    RefundOutcome,
    RefundRequest,
)


class ChargeOnlyProvider:
    def __init__(self) -> None:
        self.outcomes: dict[str, ChargeOutcome] = {}  # by attempt key

    @property
    def name(self) -> str:
        raise NotImplementedError

    @property
    def idempotency_window(self) -> timedelta | None:
        # ``outcomes`` keeps every attempt for the provider's life; a test double that
        # models a provider pruning keys overrides this.
        return None

    @property
    def status_search_lag(self) -> timedelta:
        # charge_status reads ``outcomes``, which the charge writes; a double modelling a
        # lagging search overrides this.
        return timedelta(0)

    @property
    def refund_status_lag(self) -> timedelta:
        # Refunds are not supported (refund_status raises): no refund to lag behind.
        return timedelta(0)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def charge_status(self, attempt_key: str) -> ChargeOutcome | None:
        return self.outcomes.get(attempt_key)

    async def charge_by_reference(self, provider_reference: str) -> ChargeOutcome | None:
        return next(
            (o for o in self.outcomes.values() if o.provider_reference == provider_reference), None
        )

    async def capture(self, request: CaptureRequest) -> ChargeOutcome:
        raise UnsupportedOperationError(self.name, "capture is not supported")

    async def close_charge(self, attempt_key: str) -> ChargeOutcome | None:
        raise UnsupportedOperationError(self.name, "payer actions are not supported")

    async def cancel(self, request: CancelRequest) -> ChargeOutcome:
        raise UnsupportedOperationError(self.name, "cancel is not supported")

    async def refund(self, request: RefundRequest) -> RefundOutcome:
        raise UnsupportedOperationError(self.name, "refunds are not supported")

    async def refund_status(self, refund_key: str, charge_reference: str) -> RefundOutcome | None:
        raise UnsupportedOperationError(self.name, "refunds are not supported")
