"""A payment as stored and as clients see it: no clear account numbers, ever."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from domain.accounts import AccountRef
from domain.error_info import ErrorInfo
from domain.money import Money
from domain.next_action import NextAction
from domain.payments import PaymentMethod
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
    # The API client that created it (None: an upstream service, through Kafka).
    client_id: str | None = None
    # Minor units refunded by succeeded refunds, and reserved by refunds not final yet.
    refunded_minor: int = 0
    refund_reserved_minor: int = 0
    # What the payer must do while the payment is requires_action (None otherwise).
    next_action: NextAction | None = None
    # What a capture took, or is taking while ``capturing``, when less than ``amount`` (the
    # authorized amount); None: all of it. The provider released the rest.
    captured_minor: int | None = None

    @property
    def captured_amount(self) -> Money:
        """What the capture takes (or took): ``amount`` unless a partial capture asked less."""
        if self.captured_minor is None:
            return self.amount
        return Money(self.captured_minor, self.amount.currency)

    @property
    def refundable_minor(self) -> int:
        """What a new refund may still return (0 unless the charge succeeded): at most what
        was captured."""
        if self.status.charge_outcome is not PaymentStatus.SUCCEEDED:
            return 0
        return self.captured_amount.minor_units - self.refunded_minor - self.refund_reserved_minor

    @property
    def payment_result(self) -> bool:
        return self.status.charge_outcome is PaymentStatus.SUCCEEDED
