"""Cancel (void): releasing the money an authorize-only payment holds, without taking it.

A :class:`CancelPayment` command moves an ``authorized`` payment to ``canceling``
(write-ahead, before the provider is asked) and then to ``canceled``, or to ``expired`` if
the provider says the hold had already run out. The move to ``canceling`` and a capture's
move to ``capturing`` are the same conditional update from ``authorized``, so of a cancel and
a capture that cross exactly one reaches the provider; the other is refused
(``payment_not_cancelable`` or ``payment_not_capturable``). A void the provider certainly
did not make returns the payment to ``authorized``; one whose outcome is unknown stays
``canceling`` until reconciliation asks the provider. Canceling a canceled (or expired)
payment again is a replay: the provider is called with one cancel key per payment. A cancel
names its payment's client scope (:mod:`domain.client_scope`) like a capture: one naming
another scope is refused ``not_found``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from domain.payments import check_client_id, check_follow_up


def cancel_key_for(payment_request_id: str) -> str:
    """The provider's idempotency key for the payment's void: one void per payment."""
    return f"{payment_request_id}-cancel"


@dataclass(frozen=True, slots=True)
class CancelPayment:
    """Cancel payment ``payment_request_id``, which must be of client scope ``client_id``
    (None: an upstream service's; see :mod:`domain.client_scope`)."""

    payment_request_id: str
    order_id: str
    requested_at: datetime
    client_id: str | None = None

    @classmethod
    def create(
        cls,
        *,
        payment_request_id: object,
        order_id: object,
        requested_at: datetime,
        client_id: object = None,
    ) -> CancelPayment:
        payment, order = check_follow_up(payment_request_id, order_id, requested_at)
        return cls(
            payment_request_id=payment,
            order_id=order,
            requested_at=requested_at,
            client_id=check_client_id(client_id),
        )
