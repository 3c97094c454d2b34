"""Cancel (void): releasing the money an authorize-only payment holds, without taking it.

A :class:`CancelPayment` command moves an ``authorized`` payment to ``canceling``
(write-ahead, before the provider is asked) and then to ``canceled``, or to ``expired`` if
the provider says the hold had already run out. The move to ``canceling`` and a capture's
move to ``capturing`` are the same conditional update from ``authorized``, so of a cancel and
a capture that cross exactly one reaches the provider; the other is refused
(``payment_not_cancelable`` or ``payment_not_capturable``). A void the provider certainly
did not make returns the payment to ``authorized``; one whose outcome is unknown stays
``canceling`` until reconciliation asks the provider. Canceling a canceled (or expired)
payment again is a replay: the provider is called with one cancel key per payment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from domain.payments import check_follow_up


def cancel_key_for(payment_request_id: str) -> str:
    """The provider's idempotency key for the payment's void: one void per payment."""
    return f"{payment_request_id}-cancel"


@dataclass(frozen=True, slots=True)
class CancelPayment:
    payment_request_id: str
    order_id: str
    requested_at: datetime

    @classmethod
    def create(
        cls, *, payment_request_id: object, order_id: object, requested_at: datetime
    ) -> CancelPayment:
        return cls(*check_follow_up(payment_request_id, order_id, requested_at), requested_at)
