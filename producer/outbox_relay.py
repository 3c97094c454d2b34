"""Publishes outbox rows to Kafka and marks them published.

Rows are published in id order, in batches, with an idempotent producer; a row is marked
only after Kafka acknowledged it. A crash between the two publishes the row again on
restart: result events carry a stable event id, so readers drop the repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from paygate.metrics import Metrics
from persistence.payment_store import PendingOutboxRow
from producer.kafka_producer import KafkaProducer

log = logging.getLogger("paygate.outbox")


class OutboxSource(Protocol):
    async def unpublished(self, limit: int) -> list[PendingOutboxRow]: ...

    async def mark_published(self, ids: list[int]) -> None: ...


class OutboxRelay:
    def __init__(
        self,
        source: OutboxSource,
        producer: KafkaProducer,
        metrics: Metrics,
        *,
        batch_size: int = 500,
        idle_poll_s: float = 0.5,
    ) -> None:
        self._source = source
        self._producer = producer
        self._metrics = metrics
        self._batch_size = batch_size
        self._idle_poll_s = idle_poll_s
        self._wakeup = asyncio.Event()

    def notify(self) -> None:
        """Tell the relay new rows were committed, so it does not wait for its next poll."""
        self._wakeup.set()

    async def publish_once(self) -> int:
        """Publish one batch; return how many rows were published."""
        rows = await self._source.unpublished(self._batch_size)
        self._metrics.outbox_backlog.set(len(rows))
        if not rows:
            return 0
        sends = [
            await self._producer.client.send(row.topic, row.payload, key=row.key.encode())
            for row in rows
        ]
        await asyncio.gather(*sends)
        await self._source.mark_published([row.id for row in rows])
        self._metrics.outbox_published.inc(len(rows))
        return len(rows)

    async def run(self) -> None:
        """Publish until cancelled; errors are logged and retried with a back-off."""
        backoff = 0.1
        while True:
            # Cleared before reading, so a notify that lands while we publish is kept.
            self._wakeup.clear()
            try:
                published = await self.publish_once()
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay failed; retrying in %.1fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if published < self._batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self._idle_poll_s)

    async def drain(self) -> None:
        """Publish everything committed so far (used at shutdown)."""
        while await self.publish_once() == self._batch_size:
            pass
