"""A payment as stored and as clients see it: no clear account numbers, ever."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from domain.accounts import AccountRef
from domain.commands import PaymentMethod
from domain.error_info import ErrorInfo
from domain.money import Money
from domain.status import PaymentStatus


@dataclass(frozen=True, slots=True)
class PaymentView:
    payment_request_id: str
    order_id: str
    user_id: str
    idempotency_key: str
    status: PaymentStatus
    amount: Money
    payment_method: PaymentMethod
    payer: AccountRef
    payee: AccountRef
    provider: str | None
    provider_reference: str | None
    error: ErrorInfo | None
    created_at: datetime
    updated_at: datetime
    # Hash of what the client asked for (see CreatePayment.parameters_fingerprint): tells an
    # idempotent retry from a conflicting reuse of its key.
    parameters_hash: str | None = None
    # Set while a retry is scheduled after a provider certainly did not charge.
    next_retry_at: datetime | None = None

    @property
    def payment_result(self) -> bool:
        return self.status is PaymentStatus.SUCCEEDED
