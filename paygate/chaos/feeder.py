"""The chaos run's load: a seeded plan of CreatePayment commands, and RefundPayment commands
right behind a share of them (:mod:`paygate.chaos.refund_plan`), sent in paced batches.

Commands go straight to the command topic as Avro, keyed by order id, as an upstream
service would send them: a payment's refunds follow it in the same batch, on the same key,
so the consumer must process them after it. A broker that is down (the planned restart)
must not lose a command: a batch that fails is sent again, whole, with a fresh producer.
What was already written the first time arrives twice, which the consumer must treat as a
replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from domain.accounts import Account, AccountType
from domain.money import Money
from domain.payments import CreatePayment, PaymentMethod
from paygate.chaos.refund_plan import PlannedRefund, plan_refunds
from producer.kafka_producer import KafkaProducer
from schemas.payments import PaymentMessages

log = logging.getLogger("paygate.chaos")

SUCCESS_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"
INSUFFICIENT_FUNDS_CARD = "4000000000009995"
# Charges succeed; their refunds are answered pending and settle later (the refund
# reconciler's path), or are declined by the acquirer (the reservation is released).
REFUNDS_SETTLE_LATER_CARD = "4000000000007726"
REFUNDS_FAIL_CARD = "4000000000005126"
PAYEE_IBAN = "DE89370400440532013000"
# Mostly successes, as in real traffic; declines exercise the failed path under chaos.
PAYER_MIX = (
    (SUCCESS_CARD, 0.7),
    (REFUNDS_SETTLE_LATER_CARD, 0.05),
    (REFUNDS_FAIL_CARD, 0.05),
    (DECLINED_CARD, 0.1),
    (INSUFFICIENT_FUNDS_CARD, 0.1),
)

BATCH_INTERVAL_S = 0.5
# A duplicate goes out this many batches after its original (a client retrying late).
_DUPLICATE_DELAY_BATCHES = (1, 8)
_RETRY_BACKOFF_S = (0.5, 5.0)


def order_prefix(run_id: str) -> str:
    """What every order id of one run starts with, so its payments can be counted."""
    return f"chaos-{run_id}-order-"


class FeedError(RuntimeError):
    """A batch could not be sent within the bound: the broker never came back."""


@dataclass(frozen=True, slots=True)
class PlannedPayment:
    payment_id: str
    order_id: str
    payload: bytes


PlannedCommand = PlannedPayment | PlannedRefund


@dataclass(frozen=True, slots=True)
class FeedPlan:
    payments: list[PlannedPayment]  # each payment once, in first-send order
    batches: list[list[PlannedCommand]]  # what goes out together; duplicates included
    refunds: list[PlannedRefund] = field(default_factory=list)  # each once, in send order

    @property
    def duplicates(self) -> int:
        return sum(map(len, self.batches)) - len(self.payments) - len(self.refunds)


def build_plan(
    *,
    payments: int,
    duplicate_rate: float,
    feed_s: float,
    run_id: str,
    rng: random.Random,
    messages: PaymentMessages,
    refund_share: float = 0.0,
    refund_rng: random.Random | None = None,
) -> FeedPlan:
    """``payments`` unique commands over ``feed_s / 0.5 s`` batches, a seeded
    ``refund_share`` of them followed by refunds; a seeded share of every kind of command
    is planned a second time, identical, a few batches later.

    Refunds draw from ``refund_rng`` only, so a seed feeds the same payments whatever the
    refund share."""
    count = max(1, min(payments, round(feed_s / BATCH_INTERVAL_S)))
    batches: list[list[PlannedCommand]] = [[] for _ in range(count)]
    planned: list[PlannedPayment] = []
    refunds: list[PlannedRefund] = []
    refund_rng = refund_rng or random.Random(0)

    def send(command: PlannedCommand, batch: int, duplicates: random.Random) -> None:
        batches[batch].append(command)
        if duplicates.random() < duplicate_rate:
            later = batch + duplicates.randint(*_DUPLICATE_DELAY_BATCHES)
            batches[min(later, count - 1)].append(command)

    cards = [card for card, _ in PAYER_MIX]
    weights = [weight for _, weight in PAYER_MIX]
    requested_at = datetime.now(UTC)
    for number in range(payments):
        command = CreatePayment.create(
            idempotency_key=f"chaos-{run_id}-{number}",
            user_id=f"chaos-user-{rng.randint(1, 50)}",
            order_id=f"{order_prefix(run_id)}{number}",
            amount=Money(rng.randint(100, 50_000), "EUR"),
            payment_method=PaymentMethod.CARD,
            payer=Account(AccountType.CARD, rng.choices(cards, weights)[0]),
            payee=Account(AccountType.IBAN, PAYEE_IBAN),
            requested_at=requested_at,
            metadata={"chaos_run": run_id},
        )
        payment = PlannedPayment(
            command.payment_request_id, command.order_id, messages.encode_command(command)
        )
        batch = number * count // payments
        planned.append(payment)
        send(payment, batch, rng)
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
    return FeedPlan(planned, batches, refunds)


@dataclass
class Feeder:
    kafka: Mapping[str, object]
    topic: str
    plan: FeedPlan
    halfway: asyncio.Event  # set once half the batches are out: the broker restart cue
    batch_timeout_s: float = 180.0
    sent: int = 0  # messages acknowledged, duplicates included
    resent_batches: int = 0
    _producer: KafkaProducer | None = field(default=None, repr=False)
    _fed: set[str] = field(default_factory=set, repr=False)

    @property
    def fed(self) -> int:
        """Distinct payments acknowledged by the broker so far."""
        return len(self._fed)

    async def run(self) -> None:
        """Send every batch on its schedule; raise :class:`FeedError` if one cannot go."""
        started = time.monotonic()
        middle = (len(self.plan.batches) - 1) // 2
        try:
            for index, batch in enumerate(self.plan.batches):
                # Paced from the start time, not from the previous send: a batch delayed by
                # the broker restart is followed at once by the ones that fell due meanwhile.
                delay = started + index * BATCH_INTERVAL_S - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._send(batch)
                if index == middle:
                    self.halfway.set()
        finally:
            await self._close()

    async def _send(self, batch: list[PlannedCommand]) -> None:
        deadline = time.monotonic() + self.batch_timeout_s
        backoff = _RETRY_BACKOFF_S[0]
        while True:
            try:
                producer = await self._started_producer()
                futures = [
                    await producer.send(self.topic, p.payload, key=p.order_id.encode())
                    for p in batch
                ]
                await asyncio.gather(*futures)
                self.sent += len(batch)
                self._fed.update(p.payment_id for p in batch if isinstance(p, PlannedPayment))
                return
            except (KafkaError, OSError) as exc:
                if time.monotonic() + backoff > deadline:
                    raise FeedError(
                        f"a batch of {len(batch)} commands could not be sent within "
                        f"{self.batch_timeout_s:.0f} s: {exc!r}"
                    ) from exc
                log.warning("feed: send failed (%r); resending the batch", exc)
                self.resent_batches += 1
                # A fresh producer: after a broker restart the old one may be stuck on
                # a dead connection or a stale idempotence epoch.
                await self._close()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _RETRY_BACKOFF_S[1])

    async def _started_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = KafkaProducer(
                self.kafka,
                client_id="paygate-chaos-feeder",
                # Short, so that a send to a stopped broker fails and is retried here,
                # where it is counted, rather than waiting inside the client.
                request_timeout_ms=10_000,
            )
            await producer.start()
            self._producer = producer
        return self._producer.client

    async def _close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(KafkaError, OSError):
                await producer.stop()
