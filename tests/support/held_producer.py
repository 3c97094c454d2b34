"""A KafkaProducer that holds records the way aiokafka does while a partition leader is
unreachable: queued, unacknowledged until the test says so."""

from __future__ import annotations

import asyncio

from producer.kafka_producer import KafkaProducer


class HeldProducer(KafkaProducer):
    """Queues records and acknowledges them only when the test says so."""

    def __init__(self) -> None:
        super().__init__({"bootstrap_servers": "127.0.0.1:1"})
        self.queued: list[tuple[bytes, asyncio.Future[object]]] = []
        self.enqueue_blocks = False
        self.enqueue_error: Exception | None = None
        self.auto_ack = False

    async def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: str,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[object]:
        if self.enqueue_error is not None:
            raise self.enqueue_error
        if self.enqueue_blocks:  # no metadata, no buffer space: aiokafka waits here
            await asyncio.Event().wait()
        delivery: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        if self.auto_ack:
            delivery.set_result("metadata")
        self.queued.append((value, delivery))
        return delivery
