"""Which payment an idempotency key stands for, and when it stops standing for it.

A key is live for ``retention`` after its payment was created (at least 7 days): within
that time the same key replays that payment (or is a conflict, with other parameters).
An expiry job then marks it expired; the key may be used again, and its next use makes a
new payment, whose id comes from the key's next *generation*. Order protection still
applies, so an expired key can never charge a paid order again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from domain.status import PaymentStatus


@dataclass(frozen=True, slots=True)
class OrderPayment:
    """What the key and order checks need to know of one of an order's payments."""

    payment_request_id: str
    idempotency_key: str
    status: PaymentStatus
    key_expired: bool


@dataclass(frozen=True, slots=True)
class KeyResolution:
    live_payment_id: str | None  # the payment the key stands for, if it is live
    next_generation: int  # the generation a new payment with this key gets


def resolve_key(payments: Iterable[OrderPayment], idempotency_key: str) -> KeyResolution:
    used = [p for p in payments if p.idempotency_key == idempotency_key]
    live = [p for p in used if not p.key_expired]
    return KeyResolution(live[0].payment_request_id if live else None, len(used))
