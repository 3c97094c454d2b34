"""Capture: taking the money an authorize-only payment holds.

A payment created with ``capture: false`` ends ``authorized``. A :class:`CapturePayment`
command then takes the whole authorized amount: ``authorized`` → ``capturing`` (write-ahead,
before the provider is asked) → ``succeeded``. A capture the provider certainly did not
make returns the payment to ``authorized``; one whose outcome is unknown stays
``capturing`` until reconciliation asks the provider. Capturing a captured payment again is
a replay: the provider is called with one capture key per payment, so it captures once.
Partial captures exist at the provider port (``CaptureRequest.amount``), not yet here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from domain.payments import check_client_id, check_follow_up


def capture_key_for(payment_request_id: str) -> str:
    """The provider's idempotency key for the payment's capture: one capture per payment."""
    return f"{payment_request_id}-capture"


@dataclass(frozen=True, slots=True)
class CapturePayment:
    """Capture payment ``payment_request_id``, which must be of client scope ``client_id``
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
    ) -> CapturePayment:
        payment, order = check_follow_up(payment_request_id, order_id, requested_at)
        return cls(payment, order, requested_at, check_client_id(client_id))
