"""Sends each planned capture-cancel race once its authorization is known, so they really race.

A race sent on a schedule mostly finds its payment not there yet: its capture or cancel
without the order's key lands on another partition, and while the faults hold the order's
partition back, it is refused as a command for an unknown payment, leaving nothing to race.
So the racer watches the store (plain SQL) and, as soon as a racing payment's charge is
known (``authorized``, or anything past pending), sends its capture and its cancel
together: one on the order's key, the other without a key. Two workers then handle them
at once, and only the store's conditional move out of ``authorized`` decides which wins.
A send the broker does not take (its restart) is made again with a fresh producer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from devtools.chaos.evidence import in_chunks
from devtools.chaos.lifecycle_plan import PlannedAuthorization
from domain.status import PaymentStatus
from persistence.tables import payments
from producer.kafka_producer import KafkaProducer

log = logging.getLogger("devtools.chaos")

_POLL_S = 0.25
_RETRY_S = 1.0
# Not known yet: the charge is still being made or in doubt.
_UNKNOWN = frozenset({PaymentStatus.PENDING.value, PaymentStatus.PROCESSING.value})


@dataclass
class Racer:
    engine: AsyncEngine
    kafka: Mapping[str, object]
    topic: str
    races: Sequence[PlannedAuthorization]
    sent: set[str] = field(default_factory=set)  # payment ids whose race went out
    _producer: KafkaProducer | None = field(default=None, repr=False)

    async def run(self, stop: asyncio.Event) -> None:
        """Send every race once its charge is known; until all are out or ``stop``."""
        try:
            while not stop.is_set() and len(self.sent) < len(self.races):
                due = [race for race in self.races if race.payment_id not in self.sent]
                known = await self._known([race.payment_id for race in due])
                for race in due:
                    if race.payment_id in known:
                        await self._send(race, stop)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), _POLL_S)
        finally:
            await self._close()

    async def _known(self, payment_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        async with self.engine.connect() as conn:
            for chunk in in_chunks(payment_ids):
                rows = await conn.execute(
                    select(payments.c.id)
                    .where(payments.c.id.in_(chunk))
                    .where(payments.c.status.not_in(_UNKNOWN))
                )
                found.update(row.id for row in rows)
        return found

    async def _send(self, race: PlannedAuthorization, stop: asyncio.Event) -> None:
        """Both commands at once, retried whole until the broker takes them (or ``stop``)."""
        while not stop.is_set():
            try:
                producer = await self._started()
                futures = [
                    await producer.send(
                        self.topic, f.payload, key=f.order_id.encode() if f.keyed else None
                    )
                    for f in race.follow_ups
                ]
                await asyncio.gather(*futures)
                self.sent.add(race.payment_id)
                return
            except (KafkaError, OSError) as exc:
                log.warning("race of %s not sent (%r); sending again", race.payment_id, exc)
                await self._close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), _RETRY_S)

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = KafkaProducer(
                self.kafka, client_id="paygate-chaos-racer", request_timeout_ms=10_000
            )
            await producer.start()
            self._producer = producer
        return self._producer.client

    async def _close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(KafkaError, OSError):
                await producer.stop()


def unsent(racer: Racer) -> list[str]:
    """Races never sent (the broker never took them): nothing raced for these payments."""
    return [race.payment_id for race in racer.races if race.payment_id not in racer.sent]
