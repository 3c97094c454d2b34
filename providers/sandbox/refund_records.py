"""What the sandbox is asked to refund and what it keeps of each refund and capture.

A refund is its own ledger row, keyed by its idempotency key (paygate's refund key), and
points at the charge it returns money from. How a charge's refunds behave (at once,
pending, failing) was decided when the charge was made, from the payer's test number,
because the ledger keeps only masked numbers and could not decide it later.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from domain.money import Money
from domain.refunds import RefundReason


class RefundBehaviour(StrEnum):
    """How the refunds of a charge go; chosen by the payer's test number."""

    SUCCEED = "succeed"  # succeeded at once
    # Answered pending; a status query after ``refund_settle_s`` finds it succeeded.
    SETTLE_LATER = "settle_later"
    FAIL = "fail"  # answered failed (refund_declined), nothing returned


class SandboxRefundStatus(StrEnum):
    SUCCEEDED = "succeeded"
    PENDING = "pending"
    FAILED = "failed"

    @property
    def holds_money(self) -> bool:
        """Whether the refund counts against what remains of its charge."""
        return self is not SandboxRefundStatus.FAILED


class SandboxRefundErrorCode(StrEnum):
    """Why the sandbox failed a refund, in its own vocabulary."""

    REFUND_DECLINED = "refund_declined"


@dataclass(frozen=True, slots=True)
class SandboxRefundParams:
    charge_id: str
    amount: Money
    refund_reference: str  # paygate's refund id
    payment_reference: str
    reason: RefundReason | None

    def request_hash(self) -> str:
        """Tells a replay of a refund key from a conflicting reuse (no account data here)."""
        canonical = {
            "chargeId": self.charge_id,
            "amountMinor": self.amount.minor_units,
            "currency": self.amount.currency,
            "refundReference": self.refund_reference,
            "paymentReference": self.payment_reference,
            "reason": None if self.reason is None else self.reason.value,
        }
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class RefundRecord:
    """One refund row. ``settles_at`` is when a pending refund becomes succeeded."""

    idempotency_key: str
    refund_id: str
    request_hash: str
    charge_id: str
    refund_reference: str
    payment_reference: str
    amount_minor: int
    currency: str
    reason: RefundReason | None
    status: SandboxRefundStatus
    error_code: SandboxRefundErrorCode | None
    created_at: datetime
    settles_at: datetime | None = None

    @property
    def message(self) -> str | None:
        if self.error_code is None:
            return None
        return "The refund was declined; no money was returned."


@dataclass(frozen=True, slots=True)
class SandboxCaptureParams:
    """Capture ``amount`` of an authorized charge; the key's replay compares the amount."""

    charge_id: str
    amount: Money
