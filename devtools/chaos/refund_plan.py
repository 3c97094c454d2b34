"""The refunds of a chaos run: seeded RefundPayment commands sent right behind their payment.

For a share of the orders (``--refund-share``), whatever their payer, the plan adds one of
three sequences, in this order, on the order's Kafka key::

    partial, rest            a part of the amount, then "all that remains" (amount null)
    partial, rest, excess    the same, then a refund that finds nothing left
    partial, excess          a part, then one that fits the captured amount on its own but
                             not beside the first: the total check, not a bound on one refund

An ``excess`` refund must be refused with ``refund_exceeds_captured``; a refund of a
declined payment with ``payment_not_refundable``. The verdict does not trust these
intentions blindly: it replays each order's refunds against the outcomes the store
recorded (see :mod:`devtools.chaos.refund_verdict`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

from domain.money import Money
from domain.refunds import RefundPayment, RefundReason
from schemas.payments import PaymentMessages


class RefundIntent(StrEnum):
    PARTIAL = "partial"  # a part of the captured amount
    REST = "rest"  # all that remains (amount null)
    EXCESS = "excess"  # more than can remain at that point: must be refused


_I = RefundIntent
# (sequence, weight): what follows a payment whose order is chosen for refunds.
REFUND_SEQUENCES: Final = (
    ((_I.PARTIAL, _I.REST), 0.4),
    ((_I.PARTIAL, _I.REST, _I.EXCESS), 0.3),
    ((_I.PARTIAL, _I.EXCESS), 0.3),
)


@dataclass(frozen=True, slots=True)
class PlannedRefund:
    refund_id: str
    payment_id: str
    order_id: str
    amount_minor: int | None  # None: all that remains
    intent: RefundIntent
    payload: bytes

    @property
    def command_id(self) -> str:
        return self.refund_id


def plan_refunds(
    *,
    payment_id: str,
    order_id: str,
    amount_minor: int,
    key_prefix: str,
    requested_at: datetime,
    rng: random.Random,
    messages: PaymentMessages,
) -> list[PlannedRefund]:
    """One order's refunds, in sending order (``amount_minor`` is at least 2)."""
    sequences = [sequence for sequence, _ in REFUND_SEQUENCES]
    weights = [weight for _, weight in REFUND_SEQUENCES]
    sequence = rng.choices(sequences, weights)[0]
    partial = rng.randint(1, amount_minor - 1)
    planned: list[PlannedRefund] = []
    for index, intent in enumerate(sequence):
        amount: int | None
        if intent is RefundIntent.PARTIAL:
            amount = partial
        elif intent is RefundIntent.REST:
            amount = None
        elif RefundIntent.REST in sequence:
            amount = rng.randint(1, amount_minor)  # nothing remains after the rest
        else:
            # Fits the captured amount alone; with the partial before it, it does not.
            amount = rng.randint(amount_minor - partial + 1, amount_minor)
        command = RefundPayment.create(
            idempotency_key=f"{key_prefix}-refund-{index}",
            payment_request_id=payment_id,
            order_id=order_id,
            amount=None if amount is None else Money(amount, "EUR"),
            reason=RefundReason.REQUESTED_BY_CUSTOMER.value,
            requested_at=requested_at,
        )
        planned.append(
            PlannedRefund(
                refund_id=command.refund_id,
                payment_id=payment_id,
                order_id=order_id,
                amount_minor=amount,
                intent=intent,
                payload=messages.encode_refund(command),
            )
        )
    return planned
