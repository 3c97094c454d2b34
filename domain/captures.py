"""Capture: taking the money an authorize-only payment holds.

A payment created with ``capture: false`` ends ``authorized``. A :class:`CapturePayment`
command then takes the authorized amount, or less (``amount``): ``authorized`` →
``capturing`` (write-ahead, before the provider is asked) → ``succeeded``. A payment is
captured once; what a partial capture leaves is released by the provider, and refunds may
return at most what was captured. A capture the provider certainly did not make returns the
payment to ``authorized``; one whose outcome is unknown stays ``capturing`` until
reconciliation asks the provider. Capturing a captured payment again is a replay when it
asks for the same amount (or none), and ``idempotency_conflict`` when it asks for another.
The provider is called with one capture key per (payment, amount), so it captures once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from domain.errors import ErrorCode, PaygateError
from domain.money import Money, money_from_decimal
from domain.payments import check_client_id, check_follow_up


def capture_key_for(payment_request_id: str, amount_minor: int | None = None) -> str:
    """The provider's idempotency key for the payment's capture of ``amount_minor`` (None:
    the whole authorized amount, the key captures have always had).

    A key per amount, not only per payment: a capture the provider refused (so the payment
    went back to ``authorized``) may be asked again for another amount, and a provider that
    remembers the refused request under its key (Stripe does) would answer it a conflict.
    Two captures of one payment cannot both run: the write-ahead move allows one at a time,
    and a capture whose outcome is unknown is only ever re-sent with its own amount."""
    suffix = "" if amount_minor is None else f"-{amount_minor}"
    return f"{payment_request_id}-capture{suffix}"


@dataclass(frozen=True, slots=True)
class CapturePayment:
    """Capture payment ``payment_request_id``, which must be of client scope ``client_id``
    (None: an upstream service's; see :mod:`domain.client_scope`). ``amount`` in the
    payment's currency, exact (None: the whole authorized amount)."""

    payment_request_id: str
    order_id: str
    requested_at: datetime
    client_id: str | None = None
    amount: Decimal | None = None

    @classmethod
    def create(
        cls,
        *,
        payment_request_id: object,
        order_id: object,
        requested_at: datetime,
        client_id: object = None,
        amount: Decimal | None = None,
    ) -> CapturePayment:
        payment, order = check_follow_up(payment_request_id, order_id, requested_at)
        if amount is not None and (not amount.is_finite() or amount <= 0):
            raise PaygateError(
                ErrorCode.INVALID_AMOUNT, "amount must be greater than zero", param="amount"
            )
        return cls(
            payment_request_id=payment,
            order_id=order,
            requested_at=requested_at,
            client_id=check_client_id(client_id),
            amount=amount,
        )


def capture_amount(authorized: Money, requested: Decimal | None) -> Money:
    """What a capture of an authorization of ``authorized`` takes: ``requested`` in its
    currency, exact, at most ``authorized``; all of it when None. Raises PaygateError
    (``invalid_amount``, ``capture_exceeds_authorized``): nothing is captured then."""
    if requested is None:
        return authorized
    amount = money_from_decimal(requested, authorized.currency)
    if amount.minor_units > authorized.minor_units:
        raise PaygateError(
            ErrorCode.CAPTURE_EXCEEDS_AUTHORIZED,
            f"the capture asks for more than the {authorized} authorized",
            param="amount",
        )
    return amount


def provider_capture_key(payment_request_id: str, authorized: Money, captured: Money) -> str:
    """The key a capture of ``captured`` out of ``authorized`` is sent under: the legacy
    per-payment key when it takes everything (so captures stored before partial ones re-send
    under the key they were sent with)."""
    whole = captured.minor_units == authorized.minor_units
    return capture_key_for(payment_request_id, None if whole else captured.minor_units)


def captured_at_provider(authorized: Money, captured: Money | None) -> int | None:
    """The ``captured_minor`` to record for a charge the provider says it captured of
    ``captured`` (None: it did not say, so all of ``authorized``, the only amount known to
    be held): None for all of it, else the smaller amount. Raises ValueError for an amount
    no capture of this authorization can be (another currency, more than authorized), which
    paygate must not record as the provider's word."""
    if captured is None or captured == authorized:
        return None
    if captured.currency != authorized.currency or captured.minor_units > authorized.minor_units:
        raise ValueError(f"the provider says {captured} captured of {authorized} authorized")
    return captured.minor_units
