"""The results topic as a feed of raw records: the listener's only contact with Kafka.

Every partition is read (no consumer group: nothing is shared or committed), so whichever
facade instance holds a waiting request sees its event. A feed starts at the end of each
partition: older results are in the store already, where a waiter looks first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from http_facade.result_events import ResultRecord


class ResultFeed(Protocol):
    async def next_batch(self) -> Sequence[ResultRecord]:
        """The next records, possibly none after a short wait; raises if the feed broke."""
        ...

    async def close(self) -> None: ...


class KafkaResultFeed:
    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer

    @classmethod
    async def open(cls, connection: Mapping[str, object], topic: str) -> KafkaResultFeed:
        """A feed positioned at the current end of every partition of ``topic``.

        ``connection``: aiokafka's keyword arguments for the cluster (``bootstrap_servers``
        and, for a secured one, TLS and SASL options).
        """
        partitions = await _partition_ids(connection, topic)
        if not partitions:
            raise RuntimeError(f"topic {topic} does not exist; run `paygate topics create`")
        consumer = AIOKafkaConsumer(
            **connection,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        await consumer.start()
        try:
            assigned = [TopicPartition(topic, p) for p in partitions]
            consumer.assign(assigned)
            await consumer.seek_to_end(*assigned)
            # Resolve the positions now: "the end" must mean the end at open time, since
            # the caller treats everything before it as already in the store.
            for tp in assigned:
                await consumer.position(tp)
        except BaseException:
            await consumer.stop()
            raise
        return cls(consumer)

    async def next_batch(self) -> list[ResultRecord]:
        batches = await self._consumer.getmany(timeout_ms=500)
        return [
            ResultRecord(value=record.value, partition=record.partition, offset=record.offset)
            for records in batches.values()
            for record in records
        ]

    async def close(self) -> None:
        # Closing follows a failure more often than not: a second one adds nothing.
        with contextlib.suppress(Exception):
            await self._consumer.stop()


async def _partition_ids(connection: Mapping[str, object], topic: str) -> list[int]:
    # A consumer without a subscription has no metadata for the topic; the admin client
    # asks for it explicitly.
    admin = AIOKafkaAdminClient(**connection)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(
        int(partition["partition"])
        for entry in described
        if entry["topic"] == topic and entry["error_code"] == 0
        for partition in entry["partitions"]
    )
