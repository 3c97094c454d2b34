"""Sends a :class:`~devtools.chaos.feed_plan.FeedPlan` to the command topic, paced.

Commands go straight to the command topic as Avro, keyed by order id, as an upstream
service would send them: a payment's refunds follow it in the same batch, on the same key,
so the consumer must process them after it. Unkeyed copies (:class:`Echo`) go out on their
own, each its delay after its original's batch was acknowledged, without a key or under a
foreign one. A broker that is down (the planned restart) must not lose a command: a send
that fails is made again, whole, with a fresh producer. What was already written the first
time arrives twice, which the consumer must treat as a replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from devtools.chaos.feed_plan import (
    BATCH_INTERVAL_S,
    Echo,
    FeedPlan,
    PlannedCommand,
    PlannedPayment,
)
from producer.kafka_producer import KafkaProducer

log = logging.getLogger("devtools.chaos")

_RETRY_BACKOFF_S = (0.5, 5.0)

# A message as it goes out: the command and its Kafka key (None: no key).
_Outgoing = tuple[PlannedCommand, bytes | None]


class FeedError(RuntimeError):
    """A batch could not be sent within the bound: the broker never came back."""


@dataclass
class Feeder:
    kafka: Mapping[str, object]  # the client options (paygate.kafka_security)
    topic: str
    plan: FeedPlan
    halfway: asyncio.Event  # set once half the batches are out: the broker restart cue
    batch_timeout_s: float = 180.0
    sent: int = 0  # messages acknowledged, duplicates and copies included
    echoed: int = 0  # unkeyed copies acknowledged
    resent_batches: int = 0
    _producer: KafkaProducer | None = field(default=None, repr=False)
    _fed: set[str] = field(default_factory=set, repr=False)

    @property
    def fed(self) -> int:
        """Distinct payments acknowledged by the broker so far."""
        return len(self._fed)

    async def run(self) -> None:
        """Send every batch and copy on its schedule; raise :class:`FeedError` if one
        cannot go."""
        started = time.monotonic()
        middle = (len(self.plan.batches) - 1) // 2
        echoes_of: defaultdict[int, list[Echo]] = defaultdict(list)
        for echo in self.plan.echoes:
            echoes_of[echo.batch].append(echo)
        # Copies by due time; the counter keeps equal times in plan order.
        due: list[tuple[float, int, Echo]] = []
        order = itertools.count()
        try:
            for index, batch in enumerate(self.plan.batches):
                # Paced from the start time, not from the previous send: a batch delayed by
                # the broker restart is followed at once by the ones that fell due meanwhile.
                batch_at = started + index * BATCH_INTERVAL_S
                await self._send_echoes(due, until=batch_at)
                await _sleep_until(batch_at)
                await self._send([(c, c.order_id.encode()) for c in batch])
                acknowledged = time.monotonic()
                for echo in echoes_of[index]:
                    heapq.heappush(due, (acknowledged + echo.delay_s, next(order), echo))
                if index == middle:
                    self.halfway.set()
            await self._send_echoes(due, until=float("inf"))
        finally:
            await self._close()

    async def _send_echoes(self, due: list[tuple[float, int, Echo]], *, until: float) -> None:
        """Send, each at its time, the copies due before ``until``."""
        while due and due[0][0] <= until:
            at, _, echo = heapq.heappop(due)
            await _sleep_until(at)
            await self._send([(echo.command, echo.kafka_key)])
            self.echoed += 1

    async def _send(self, messages: Sequence[_Outgoing]) -> None:
        deadline = time.monotonic() + self.batch_timeout_s
        backoff = _RETRY_BACKOFF_S[0]
        while True:
            try:
                producer = await self._started_producer()
                futures = [
                    await producer.send(self.topic, command.payload, key=key)
                    for command, key in messages
                ]
                await asyncio.gather(*futures)
                self.sent += len(messages)
                self._fed.update(c.payment_id for c, _ in messages if isinstance(c, PlannedPayment))
                return
            except (KafkaError, OSError) as exc:
                if time.monotonic() + backoff > deadline:
                    raise FeedError(
                        f"a batch of {len(messages)} commands could not be sent within "
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


async def _sleep_until(at: float) -> None:
    # The feed's schedule itself, not a wait for readiness.
    delay = at - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
