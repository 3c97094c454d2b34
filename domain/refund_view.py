"""A refund as stored and as clients see it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from domain.error_info import ErrorInfo
from domain.money import Money
from domain.refunds import RefundReason, RefundStatus


@dataclass(frozen=True, slots=True)
class RefundView:
    refund_id: str
    payment_request_id: str
    order_id: str
    idempotency_key: str
    # None only for a refused "refund what remains" request when nothing remained.
    amount: Money | None
    reason: RefundReason | None
    status: RefundStatus
    provider: str | None
    provider_reference: str | None
    error: ErrorInfo | None
    created_at: datetime
    updated_at: datetime
    parameters_hash: str
