"""Refunds: the command that asks for one, its statuses, and the ids derived from it.

A refund returns all or part of a succeeded payment. Several refunds may follow one payment;
what they return together (succeeded plus still pending) never exceeds what was captured.
The store enforces that inside its transaction (see persistence.refund_store); this module
holds the rules that need no database.

::

    processing ──► succeeded ──► failed       (the provider fails it later)
        │    └───► failed
        └──► pending ──► succeeded | failed   (the provider answers later, or timed out)

``processing`` is the write-ahead state: the refund's amount is reserved against the payment
before the provider is called. ``pending`` keeps the reservation until the provider's final
answer, found by reconciliation.

``succeeded`` and ``failed`` are final for paygate's own work (no call, no claim): only the
provider's later word that it failed a refund it had answered succeeded (Stripe's
``refund.failed``) moves a succeeded refund on, to ``failed`` with
``refund_failed_after_success``, taking its amount off the payment's refunded total
(persistence.refund_failed_later).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

from domain.errors import ErrorCode, PaygateError
from domain.money import Money
from domain.payments import check_client_id, check_follow_up, check_idempotency_key
from domain.text import check_characters

# Fixed forever, like the payment id namespace: refund ids are derived from it.
_REFUND_ID_NAMESPACE: Final = uuid.UUID("b5d0a1c4-7f7e-4c1e-8d0f-2a9b6c3e1f58")
_REFUND_ID: Final = re.compile(r"\Aref_[0-9a-f]{32}\Z")


class RefundReason(StrEnum):
    REQUESTED_BY_CUSTOMER = "requested_by_customer"
    DUPLICATE = "duplicate"
    FRAUDULENT = "fraudulent"
    OTHER = "other"


class RefundStatus(StrEnum):
    PROCESSING = "processing"
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in (RefundStatus.SUCCEEDED, RefundStatus.FAILED)


def refund_id_for(payment_request_id: str, idempotency_key: str) -> str:
    """The one refund id a (payment, idempotency key) pair maps to, on every intake."""
    name = f"{payment_request_id}\x1f{idempotency_key}"
    return "ref_" + uuid.uuid5(_REFUND_ID_NAMESPACE, name).hex


def is_refund_id(value: str) -> bool:
    return bool(_REFUND_ID.match(value))


def refund_reason(value: object) -> RefundReason | None:
    if value is None:
        return None
    check_characters(value, "reason")
    try:
        return RefundReason(str(value))
    except ValueError:
        raise PaygateError(
            ErrorCode.INVALID_REQUEST,
            f"reason must be one of: {', '.join(r.value for r in RefundReason)}",
            param="reason",
        ) from None


@dataclass(frozen=True, slots=True)
class RefundPayment:
    """Return ``amount`` of payment ``payment_request_id``; all that remains when None.

    The payment must be of client scope ``client_id`` (None: an upstream service's; see
    :mod:`domain.client_scope`). The scope is not part of the refund id nor of the
    parameters' fingerprint: payment ids are scoped already, and a refund's id must not
    change with who asks about it.
    """

    idempotency_key: str
    payment_request_id: str
    order_id: str
    amount: Money | None
    reason: RefundReason | None
    requested_at: datetime
    client_id: str | None = None

    @classmethod
    def create(
        cls,
        *,
        idempotency_key: object,
        payment_request_id: object,
        order_id: object,
        amount: Money | None,
        reason: object,
        requested_at: datetime,
        client_id: object = None,
    ) -> RefundPayment:
        payment, order = check_follow_up(payment_request_id, order_id, requested_at)
        return cls(
            idempotency_key=check_idempotency_key(idempotency_key),
            payment_request_id=payment,
            order_id=order,
            amount=amount,
            reason=refund_reason(reason),
            requested_at=requested_at,
            client_id=check_client_id(client_id),
        )

    @property
    def refund_id(self) -> str:
        return refund_id_for(self.payment_request_id, self.idempotency_key)

    def parameters_fingerprint(self) -> str:
        """A hash of what was asked, to tell a replay from a conflicting reuse of the key."""
        canonical = {
            "paymentRequestId": self.payment_request_id,
            "amount": None if self.amount is None else self.amount.minor_units,
            "currency": None if self.amount is None else self.amount.currency,
            "reason": None if self.reason is None else self.reason.value,
        }
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()
