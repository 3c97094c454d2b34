"""Order protection: one order is paid once.

* An order with a succeeded payment, or one whose outcome is not yet known (processing,
  pending, or requires_action: the payer may still pay it), is never charged by another
  payment: ``order_already_paid``.
* An order whose payments all failed (or expired unpaid) may be charged again only by a
  payment that says it is a new attempt (``newAttempt: true``): ``new_attempt_required``
  otherwise. A client that lost track of its first request and sends a fresh idempotency
  key is stopped, not charged.

Retries of the *same* payment (same idempotency key) never get here: they replay.
"""

from __future__ import annotations

from collections.abc import Iterable

from domain.errors import ErrorCode, PaygateError
from domain.status import CAPTURED, HELD, WAITING_FOR_PROVIDER, PaymentStatus


def refusal_for_new_payment(
    existing: Iterable[PaymentStatus], *, new_attempt: bool
) -> PaygateError | None:
    """Why a new payment for an order with these payments must be refused, or None."""
    statuses = set(existing)
    if statuses & CAPTURED:
        # A refunded payment still paid the order once: charging it again is a new order.
        return PaygateError(
            ErrorCode.ORDER_ALREADY_PAID, "the order already has a succeeded payment"
        )
    if statuses & HELD:
        return PaygateError(
            ErrorCode.ORDER_ALREADY_PAID,
            "the order has an authorized payment; capture it instead of charging again",
        )
    if PaymentStatus.REQUIRES_ACTION in statuses:
        return PaygateError(
            ErrorCode.ORDER_ALREADY_PAID,
            "the order has a payment waiting for the payer to act; it may still be paid",
        )
    if statuses & WAITING_FOR_PROVIDER:
        return PaygateError(
            ErrorCode.ORDER_ALREADY_PAID,
            "the order has a payment whose outcome is not known yet; it may have been charged",
        )
    if statuses and not new_attempt:
        return PaygateError(
            ErrorCode.NEW_ATTEMPT_REQUIRED,
            "the order already has a failed or expired payment; send newAttempt: true to charge "
            "it again",
            param="newAttempt",
        )
    return None
