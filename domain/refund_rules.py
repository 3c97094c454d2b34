"""Whether a refund may be made: the checks both intakes and the store apply alike.

The facade applies them to answer a REST client at once; the store applies them again
inside its transaction, where they are authoritative (two refunds may cross in flight).
"""

from __future__ import annotations

from domain.errors import ErrorCode, PaygateError
from domain.money import Money
from domain.status import CAPTURED, PaymentStatus


def refusal_for_refund(
    *,
    status: PaymentStatus,
    payment_currency: str,
    remaining_minor: int,
    requested: Money | None,
) -> PaygateError | None:
    """Why a refund of ``requested`` (None: all that remains) must be refused, or None.

    ``remaining_minor`` is the captured amount less succeeded and reserved refunds.
    """
    if status not in CAPTURED:
        return PaygateError(
            ErrorCode.PAYMENT_NOT_REFUNDABLE,
            f"the payment is {status.value}; only a succeeded payment can be refunded",
        )
    if requested is not None and requested.currency != payment_currency:
        return PaygateError(
            ErrorCode.CURRENCY_MISMATCH,
            f"the refund is in {requested.currency} but the payment is in {payment_currency}",
            param="currency",
        )
    wanted = remaining_minor if requested is None else requested.minor_units
    if remaining_minor <= 0 or wanted > remaining_minor:
        return PaygateError(
            ErrorCode.REFUND_EXCEEDS_CAPTURED,
            f"the refund is above the {max(remaining_minor, 0)} minor units that remain refundable",
            param="amount",
        )
    return None
