"""Result events: what paygate tells the world after a payment changes state."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from domain.error_info import ErrorInfo
from domain.money import Money
from domain.status import PaymentStatus

_EVENT_ID_NAMESPACE: Final = uuid.UUID("0c7c4a3e-8f0e-4d0b-b2a4-2f5e4f8e9a17")


def result_event_id(payment_request_id: str, status: PaymentStatus) -> str:
    """Stable per (payment, status): a re-published event keeps its id, so readers can dedupe."""
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, f"{payment_request_id}:{status.value}"))


def conflict_event_id(payment_request_id: str, parameters_fingerprint: str) -> str:
    """Stable per refused reuse of a key: the same conflicting command re-sent keeps its id."""
    name = f"{payment_request_id}:conflict:{parameters_fingerprint}"
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, name))


@dataclass(frozen=True, slots=True)
class PaymentResult:
    event_id: str
    payment_request_id: str
    order_id: str
    user_id: str
    status: PaymentStatus
    amount: Money
    provider: str | None
    provider_reference: str | None
    error: ErrorInfo | None
    created_at: datetime
    occurred_at: datetime

    @property
    def payment_result(self) -> bool:
        """The seed's boolean: true only for a payment that certainly succeeded."""
        return self.status is PaymentStatus.SUCCEEDED
