"""The chaos run's load, planned from the seed before anything is sent.

``--payments`` CreatePayment commands in batches every 0.5 s, each keyed by its order id,
and RefundPayment commands right behind a share of them (:mod:`devtools.chaos.refund_plan`).
Three kinds of copies ride along:

- **duplicates** (``--duplicate-rate``): the same command again, on the same key, a few
  batches later, as a client retrying late would send it;
- **unkeyed copies** (``--unkeyed-duplicate-rate``): the same command again 0.05 to 2 s
  after its original was acknowledged, without a Kafka key or keyed by its own id instead
  of its order's (:class:`EchoKey`). The consumer runs an unkeyed message beside
  everything, and a foreign key lands it on another partition, so the copy is handled
  *while* the original still is: two workers on one payment (or refund) at once, which
  only the store's ownership of the attempt keeps apart;
- the resends of a batch the broker did not acknowledge (made by the feeder).

Payments that do not finish at once (:mod:`devtools.chaos.lifecycle_plan`) ride along:
a share paid with the payer-action number, and a share authorized only and followed by
captures and cancels, one of them racing the other without a key.

Every draw comes from seeded generators: the payments from ``<seed>:feed``, the refunds
from ``<seed>:refunds``, the unkeyed copies from ``<seed>:echoes``, the payer actions and
authorizations from ``<seed>:lifecycle``, so turning one knob does not change what the
others feed (a payment turned into a payer action or an authorization keeps its amount).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

from devtools.chaos.lifecycle_plan import (
    FOLLOW_UP_DELAY_BATCHES,
    REPEAT_DELAY_BATCHES,
    FollowUpSequence,
    PlannedAction,
    PlannedAuthorization,
    PlannedFollowUp,
    draw_move,
    plan_follow_ups,
    sent_twice,
)
from devtools.chaos.payers import AUTHORIZE_PAYER_MIX, PAYEE_IBAN, PAYER_ACTION_CARD, PAYER_MIX
from devtools.chaos.refund_plan import PlannedRefund, plan_refunds
from devtools.chaos.sealed_accounts import sealed
from domain.accounts import Account, AccountType
from domain.money import Money
from domain.payments import CreatePayment, PaymentMethod
from schemas.payments import PaymentMessages

BATCH_INTERVAL_S: Final = 0.5
# A duplicate goes out this many batches after its original (a client retrying late).
_DUPLICATE_DELAY_BATCHES: Final = (1, 8)
# An unkeyed copy goes out this long after its original was acknowledged: close enough to
# find the original still in a provider call or a retry back-off.
ECHO_DELAY_S: Final = (0.05, 2.0)


def order_prefix(run_id: str) -> str:
    """What every order id of one run starts with, so its payments can be counted."""
    return f"chaos-{run_id}-order-"


@dataclass(frozen=True, slots=True)
class PlannedPayment:
    payment_id: str
    order_id: str
    payload: bytes
    payer: str  # the sandbox test number, which picks the acquirer's behaviour

    @property
    def command_id(self) -> str:
        return self.payment_id


PlannedCommand = PlannedPayment | PlannedRefund | PlannedFollowUp


class EchoKey(StrEnum):
    """The Kafka key an unkeyed copy goes out with."""

    NONE = "none"  # no key at all: the consumer gives it a key of its own (its offset)
    OWN_ID = "own_id"  # its payment or refund id, not its order id: another partition


@dataclass(frozen=True, slots=True)
class Echo:
    """A copy of ``command``, sent ``delay_s`` after the batch ``batch`` was acknowledged."""

    command: PlannedCommand
    batch: int
    delay_s: float
    key: EchoKey

    @property
    def kafka_key(self) -> bytes | None:
        return None if self.key is EchoKey.NONE else self.command.command_id.encode()


@dataclass(frozen=True, slots=True)
class FeedPlan:
    payments: list[PlannedPayment]  # each payment once, in first-send order
    batches: list[list[PlannedCommand]]  # what goes out together; duplicates included
    refunds: list[PlannedRefund] = field(default_factory=list)  # each once, in send order
    echoes: list[Echo] = field(default_factory=list)  # unkeyed copies, by batch
    # payment id -> its payer's move, for the payments paid with the payer-action number
    actions: dict[str, PlannedAction] = field(default_factory=dict)
    # payment id -> its follow-ups, for the payments created authorize-only
    authorizations: dict[str, PlannedAuthorization] = field(default_factory=dict)

    @property
    def follow_ups(self) -> int:
        """Capture and cancel commands, each once (a racing one included)."""
        return sum(len(a.follow_ups) for a in self.authorizations.values())

    @property
    def duplicates(self) -> int:
        """Commands in the batches more than once (a duplicate is the same object again)."""
        sent = [id(command) for batch in self.batches for command in batch]
        return len(sent) - len(set(sent))

    @property
    def races(self) -> list[PlannedAuthorization]:
        """The capture-cancel races, sent by :mod:`devtools.chaos.racer`, not in a batch."""
        return [a for a in self.authorizations.values() if a.sequence is FollowUpSequence.RACE]

    def echoed(self, kind: type[PlannedPayment] | type[PlannedRefund], key: EchoKey) -> set[str]:
        """Ids of the commands of one kind sent again with ``key``."""
        return {
            e.command.command_id
            for e in self.echoes
            if isinstance(e.command, kind) and e.key is key
        }


def build_plan(
    *,
    payments: int,
    duplicate_rate: float,
    feed_s: float,
    run_id: str,
    rng: random.Random,
    messages: PaymentMessages,
    public_key_pem: bytes,
    refund_share: float = 0.0,
    refund_rng: random.Random | None = None,
    echo_rate: float = 0.0,
    echo_rng: random.Random | None = None,
    action_share: float = 0.0,
    authorize_share: float = 0.0,
    lifecycle_rng: random.Random | None = None,
) -> FeedPlan:
    """``payments`` unique commands over ``feed_s / 0.5 s`` batches, a seeded
    ``refund_share`` of them followed by refunds; a seeded share of every kind of command
    is planned a second time, identical, a few batches later, and another share
    (``echo_rate``) is copied under another key right after its original. Every account
    number goes out encrypted to ``public_key_pem``, never clear."""
    count = max(1, min(payments, round(feed_s / BATCH_INTERVAL_S)))
    batches: list[list[PlannedCommand]] = [[] for _ in range(count)]
    planned: list[PlannedPayment] = []
    refunds: list[PlannedRefund] = []
    echoes: list[Echo] = []
    refund_rng = refund_rng or random.Random(0)
    echo_rng = echo_rng or random.Random(0)
    lifecycle_rng = lifecycle_rng or random.Random(0)
    actions: dict[str, PlannedAction] = {}
    authorizations: dict[str, PlannedAuthorization] = {}

    def send(command: PlannedCommand, batch: int, duplicates: random.Random) -> None:
        batches[batch].append(command)
        if duplicates.random() < duplicate_rate:
            later = batch + duplicates.randint(*_DUPLICATE_DELAY_BATCHES)
            batches[min(later, count - 1)].append(command)
        if echo_rng.random() < echo_rate:
            key = echo_rng.choice(list(EchoKey))
            echoes.append(Echo(command, batch, echo_rng.uniform(*ECHO_DELAY_S), key))

    cards = [card for card, _ in PAYER_MIX]
    weights = [weight for _, weight in PAYER_MIX]
    requested_at = datetime.now(UTC)
    authorize_cards = [card for card, _ in AUTHORIZE_PAYER_MIX]
    authorize_weights = [weight for _, weight in AUTHORIZE_PAYER_MIX]
    for number in range(payments):
        payer = rng.choices(cards, weights)[0]
        user_id = f"chaos-user-{rng.randint(1, 50)}"
        amount = Money(rng.randint(100, 50_000), "EUR")
        kind = lifecycle_rng.random()
        acts = kind < action_share
        authorizes = not acts and kind < action_share + authorize_share
        if acts:
            payer = PAYER_ACTION_CARD
        elif authorizes:
            payer = lifecycle_rng.choices(authorize_cards, authorize_weights)[0]
        command = CreatePayment.create(
            idempotency_key=f"chaos-{run_id}-{number}",
            user_id=user_id,
            order_id=f"{order_prefix(run_id)}{number}",
            amount=amount,
            payment_method=PaymentMethod.CARD,
            payer=sealed(public_key_pem, Account(AccountType.CARD, payer)),
            payee=sealed(public_key_pem, Account(AccountType.IBAN, PAYEE_IBAN)),
            requested_at=requested_at,
            metadata={"chaos_run": run_id},
            capture=not authorizes,
        )
        payment = PlannedPayment(
            command.payment_request_id, command.order_id, messages.encode_command(command), payer
        )
        batch = number * count // payments
        planned.append(payment)
        send(payment, batch, rng)
        if acts:
            actions[payment.payment_id] = draw_move(lifecycle_rng, payment.payment_id)
            continue
        if authorizes:
            authorization = plan_follow_ups(
                payment_id=payment.payment_id,
                order_id=payment.order_id,
                amount_minor=amount.minor_units,
                requested_at=requested_at,
                rng=lifecycle_rng,
                messages=messages,
            )
            authorizations[payment.payment_id] = authorization
            _send_follow_ups(authorization, batch, batches, lifecycle_rng)
            continue
        if refund_rng.random() < refund_share:
            for refund in plan_refunds(
                payment_id=payment.payment_id,
                order_id=payment.order_id,
                amount_minor=command.amount.minor_units,
                key_prefix=command.idempotency_key,
                requested_at=requested_at,
                rng=refund_rng,
                messages=messages,
            ):
                refunds.append(refund)
                send(refund, batch, refund_rng)
    return FeedPlan(planned, batches, refunds, echoes, actions, authorizations)


def _send_follow_ups(
    authorization: PlannedAuthorization,
    batch: int,
    batches: list[list[PlannedCommand]],
    rng: random.Random,
) -> None:
    """Put the follow-ups a few batches after their payment's, in order in one batch (a
    sequence sent twice repeats its first command later). A race is not scheduled: the
    racer sends it once the authorization is known."""
    if authorization.sequence is FollowUpSequence.RACE:
        return
    last = len(batches) - 1
    at = min(batch + rng.randint(*FOLLOW_UP_DELAY_BATCHES), last)
    batches[at].extend(authorization.follow_ups)
    if sent_twice(authorization.sequence):
        again = min(at + rng.randint(*REPEAT_DELAY_BATCHES), last)
        batches[again].append(authorization.follow_ups[0])
