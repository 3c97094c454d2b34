"""The outage run's load: payments that all succeed when the acquirer is up, one at a time
at a steady rate (not in bursts: a burst in flight at the moment of the kill would be cut
whole, which a steady stream of traffic does not do).

Every payer is the sandbox's always-succeeding card, so a payment that ends ``failed`` can
only have failed for the outage. Commands go to the command topic as Avro, keyed by order
id, as an upstream service sends them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from devtools.chaos.feed_plan import PlannedPayment
from devtools.chaos.payers import PAYEE_IBAN, SUCCESS_CARD
from domain.accounts import Account, AccountType
from domain.money import Money
from domain.payments import CreatePayment, PaymentMethod
from producer.kafka_producer import KafkaProducer
from schemas.payments import PaymentMessages


def order_prefix(run_id: str) -> str:
    """What every order id of one run starts with, so its payments can be counted."""
    return f"outage-{run_id}-order-"


def steady_plan(*, count: int, run_id: str, messages: PaymentMessages) -> list[PlannedPayment]:
    requested_at = datetime.now(UTC)
    planned = []
    for number in range(count):
        command = CreatePayment.create(
            idempotency_key=f"outage-{run_id}-{number}",
            user_id="outage-user",
            order_id=f"{order_prefix(run_id)}{number}",
            amount=Money(1000 + number % 9000, "EUR"),
            payment_method=PaymentMethod.CARD,
            payer=Account(AccountType.CARD, SUCCESS_CARD),
            payee=Account(AccountType.IBAN, PAYEE_IBAN),
            requested_at=requested_at,
            metadata={"outage_run": run_id},
        )
        planned.append(
            PlannedPayment(
                command.payment_request_id,
                command.order_id,
                messages.encode_command(command),
                SUCCESS_CARD,
            )
        )
    return planned


@dataclass
class SteadyFeeder:
    """Sends payment ``n`` at ``start + n / rate``; ``sent`` counts those handed to the
    producer, in order, so ``plan[:sent]`` are the ones fed so far."""

    kafka: Mapping[str, object]
    topic: str
    plan: Sequence[PlannedPayment]
    rate: float
    sent: int = 0
    _acks: list[asyncio.Future[object]] = field(default_factory=list, repr=False)

    async def run(self) -> None:
        producer = KafkaProducer(self.kafka, client_id="paygate-outage-feeder")
        await producer.start()
        try:
            started = time.monotonic()
            for number, payment in enumerate(self.plan):
                # Paced from the start, not from the previous send, so the rate holds.
                delay = started + number / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                ack = await producer.client.send(
                    self.topic, payment.payload, key=payment.order_id.encode()
                )
                self._acks.append(ack)
                self.sent += 1
            await asyncio.gather(*self._acks)  # every one written, or this raises
        finally:
            await producer.stop()
