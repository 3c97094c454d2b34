"""The payments of a chaos run that do not finish at once, planned from the seed.

Two kinds, each a seeded share of the orders (``--action-share``, ``--authorize-share``):

- **Payer actions.** The payment is paid with the sandbox number that requires a
  3-D-Secure-like action (``4000000000003220``): the acquirer answers ``requires_action``
  with a redirect URL, and the charge waits for the payer. The harness plays the payer
  (:mod:`devtools.chaos.payer_actions`) with one :class:`PayerMove` per payment: it
  approves or denies the action at the acquirer a little after paygate shows it, leaves
  it alone until it expires, or tries to approve it only after it expired.
- **Authorizations.** The payment is created with ``capture: false`` and ends
  ``authorized``; a :class:`FollowUpSequence` of ``CapturePayment`` (whole or partial, with
  ``amount``) and ``CancelPayment`` commands follows it 1 to 2 s later, on the order's key
  (so in order), some sent twice, and in a race: a capture and a cancel of the same payment
  sent at once once the authorization is known (:mod:`devtools.chaos.racer`), one of them
  without a Kafka key, so two workers handle them concurrently.
  Some get nothing: the acquirer's hold (shortened for the run) runs out, and paygate must
  find the authorization expired on its own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

from domain.cancels import CancelPayment
from domain.captures import CapturePayment
from domain.money import Money
from schemas.payments import PaymentMessages


class PayerMove(StrEnum):
    """What the payer of a ``requires_action`` payment does."""

    APPROVE = "approve"  # completes the action: the charge succeeds
    DENY = "deny"  # fails the action: the charge is declined
    ABANDON = "abandon"  # never acts: paygate closes the trade once it expired
    LATE = "late"  # approves only after the action expired: the acquirer must refuse


_M = PayerMove
PAYER_MOVES: Final = ((_M.APPROVE, 0.45), (_M.DENY, 0.15), (_M.ABANDON, 0.25), (_M.LATE, 0.15))
# The payer acts this long after paygate shows the action (a LATE payer: after it expired).
PAYER_DELAY_S: Final = (0.2, 4.0)
LATE_BY_S: Final = (0.5, 2.0)


class FollowUpKind(StrEnum):
    CAPTURE = "capture"
    CANCEL = "cancel"


class FollowUpSequence(StrEnum):
    """What follows an authorization; the race sends its second command without a key."""

    CAPTURE = "capture"  # the whole amount
    PARTIAL = "partial"  # a part: the rest is released
    PARTIAL_TWICE = "partial_twice"  # the same partial capture sent again, later
    PARTIAL_THEN_OTHER = "partial_then_other"  # then another amount: refused, captured once
    CANCEL = "cancel"
    CANCEL_TWICE = "cancel_twice"
    CAPTURE_THEN_CANCEL = "capture_then_cancel"  # in order: the capture wins
    CANCEL_THEN_CAPTURE = "cancel_then_capture"  # in order: the cancel wins
    RACE = "race"  # a capture and a cancel at once, on two partitions: exactly one wins
    HOLD = "hold"  # nothing follows: the hold runs out, the payment must become expired


_S = FollowUpSequence
FOLLOW_UP_SEQUENCES: Final = (
    (_S.CAPTURE, 0.12),
    (_S.PARTIAL, 0.12),
    (_S.PARTIAL_TWICE, 0.08),
    (_S.PARTIAL_THEN_OTHER, 0.08),
    (_S.CANCEL, 0.1),
    (_S.CANCEL_TWICE, 0.08),
    (_S.CAPTURE_THEN_CANCEL, 0.1),
    (_S.CANCEL_THEN_CAPTURE, 0.08),
    (_S.RACE, 0.2),
    (_S.HOLD, 0.06),
)
# Sequences whose commands all keep the order's key: the consumer handles them in order.
ORDERED: Final = frozenset(set(FollowUpSequence) - {_S.RACE, _S.HOLD})
# Follow-ups go out this many batches after their payment: its authorization is usually
# known by then, and a race finds an authorized payment to fight over.
FOLLOW_UP_DELAY_BATCHES: Final = (2, 4)
# A sequence sent twice repeats its first command this many batches later still.
REPEAT_DELAY_BATCHES: Final = (1, 4)


@dataclass(frozen=True, slots=True)
class PlannedFollowUp:
    """A CapturePayment or CancelPayment, as it goes out (its payload encoded)."""

    payment_id: str
    order_id: str
    kind: FollowUpKind
    amount_minor: int | None  # a capture's amount (None: all); None for a cancel
    payload: bytes
    keyed: bool = True  # False: sent without a Kafka key (the racing command)

    @property
    def command_id(self) -> str:
        return self.payment_id


@dataclass(frozen=True, slots=True)
class PlannedAuthorization:
    """An authorize-only payment and what follows it, each command once, in sending order
    (a command sent twice is listed once: it is the same command)."""

    payment_id: str
    amount_minor: int
    sequence: FollowUpSequence
    follow_ups: tuple[PlannedFollowUp, ...]

    @property
    def capture_amounts(self) -> frozenset[int]:
        """Every amount a capture of it asks for (the whole one for a capture without)."""
        return frozenset(
            self.amount_minor if f.amount_minor is None else f.amount_minor
            for f in self.follow_ups
            if f.kind is FollowUpKind.CAPTURE
        )

    @property
    def first_keyed(self) -> FollowUpKind | None:
        """The kind of the first command on the order's key: in order, it wins."""
        return next((f.kind for f in self.follow_ups if f.keyed), None)


@dataclass(frozen=True, slots=True)
class PlannedAction:
    """The payer of a ``requires_action`` payment: what they do and when (``delay_s``
    after paygate shows the action, or after it expired for a LATE payer)."""

    payment_id: str
    move: PayerMove
    delay_s: float


def draw_move(rng: random.Random, payment_id: str) -> PlannedAction:
    moves = [move for move, _ in PAYER_MOVES]
    move = rng.choices(moves, [weight for _, weight in PAYER_MOVES])[0]
    delay = rng.uniform(*(LATE_BY_S if move is PayerMove.LATE else PAYER_DELAY_S))
    return PlannedAction(payment_id, move, delay)


def plan_follow_ups(
    *,
    payment_id: str,
    order_id: str,
    amount_minor: int,
    requested_at: datetime,
    rng: random.Random,
    messages: PaymentMessages,
) -> PlannedAuthorization:
    """One authorization's follow-ups (``amount_minor`` is at least 2)."""
    sequences = [sequence for sequence, _ in FOLLOW_UP_SEQUENCES]
    sequence = rng.choices(sequences, [weight for _, weight in FOLLOW_UP_SEQUENCES])[0]
    partial = rng.randint(1, amount_minor - 1)

    def capture(amount: int | None, *, keyed: bool = True) -> PlannedFollowUp:
        command = CapturePayment.create(
            payment_request_id=payment_id,
            order_id=order_id,
            requested_at=requested_at,
            amount=None if amount is None else Money(amount, "EUR").to_decimal(),
        )
        payload = messages.encode_capture(command)
        return PlannedFollowUp(
            payment_id, order_id, FollowUpKind.CAPTURE, amount, payload, keyed=keyed
        )

    def cancel(*, keyed: bool = True) -> PlannedFollowUp:
        command = CancelPayment.create(
            payment_request_id=payment_id, order_id=order_id, requested_at=requested_at
        )
        payload = messages.encode_cancel(command)
        return PlannedFollowUp(
            payment_id, order_id, FollowUpKind.CANCEL, None, payload, keyed=keyed
        )

    whole_or_part = rng.choice([None, partial])
    follow_ups: tuple[PlannedFollowUp, ...]
    if sequence in (_S.CAPTURE, _S.PARTIAL, _S.PARTIAL_TWICE):
        follow_ups = (capture(None if sequence is _S.CAPTURE else partial),)
    elif sequence is _S.PARTIAL_THEN_OTHER:
        # The whole amount, asked explicitly after a part: another amount, refused.
        follow_ups = (capture(partial), capture(amount_minor))
    elif sequence in (_S.CANCEL, _S.CANCEL_TWICE):
        follow_ups = (cancel(),)
    elif sequence is _S.CAPTURE_THEN_CANCEL:
        follow_ups = (capture(whole_or_part), cancel())
    elif sequence is _S.CANCEL_THEN_CAPTURE:
        follow_ups = (cancel(), capture(whole_or_part))
    elif sequence is _S.HOLD:
        follow_ups = ()
    elif rng.random() < 0.5:  # the race: which one keeps the order's key
        follow_ups = (capture(whole_or_part), cancel(keyed=False))
    else:
        follow_ups = (cancel(), capture(whole_or_part, keyed=False))
    return PlannedAuthorization(payment_id, amount_minor, sequence, follow_ups)


def sent_twice(sequence: FollowUpSequence) -> bool:
    return sequence in (_S.PARTIAL_TWICE, _S.CANCEL_TWICE)
