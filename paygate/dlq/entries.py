"""Reading the dead-letter topic into typed entries, bounded and without a consumer group.

The read starts at the beginning of every partition and stops at the end offsets captured
when it starts, so it always terminates, even while the consumer keeps adding dead letters.
Nothing is committed: listing the DLQ leaves no trace on the broker.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from consumer.dead_letters import (
    HEADER_ERROR_CODE,
    HEADER_FIRST_SEEN,
    HEADER_MESSAGE,
    HEADER_OFFSET,
    HEADER_PARTITION,
    HEADER_REASON,
    HEADER_TOPIC,
)


class DlqError(Exception):
    """A failure the command reports as a clear message with exit code 2."""


@dataclass(frozen=True, slots=True, order=True)
class Handle:
    """Where a dead letter sits in the DLQ: the handle an operator selects it by."""

    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.partition}:{self.offset}"

    @classmethod
    def parse(cls, text: str) -> Handle:
        partition, sep, offset = text.strip().partition(":")
        if not sep or not partition.isdigit() or not offset.isdigit():
            raise ValueError(f"{text!r} is not PARTITION:OFFSET (two non-negative integers)")
        return cls(int(partition), int(offset))


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message of the dead-letter topic, with the router's headers parsed.

    ``value`` holds the original bytes unchanged (they may contain account numbers): it is
    kept only to re-publish them, never shown; ``repr`` leaves it out.
    """

    handle: Handle
    error_code: str | None
    reason: str | None
    message: str | None
    original_topic: str | None
    original_partition: int | None
    original_offset: int | None
    first_seen: str | None
    dead_lettered_at: datetime | None
    key: bytes | None
    value: bytes = field(repr=False)

    @property
    def value_size(self) -> int:
        return len(self.value)

    @classmethod
    def from_record(cls, record: ConsumerRecord) -> DeadLetter:
        headers: dict[str, str] = {}
        for name, raw in record.headers or ():
            headers[name] = (raw or b"").decode("utf-8", errors="replace")
        timestamp = record.timestamp
        return cls(
            handle=Handle(record.partition, record.offset),
            error_code=headers.get(HEADER_ERROR_CODE),
            reason=headers.get(HEADER_REASON),
            message=headers.get(HEADER_MESSAGE),
            original_topic=headers.get(HEADER_TOPIC),
            original_partition=_int(headers.get(HEADER_PARTITION)),
            original_offset=_int(headers.get(HEADER_OFFSET)),
            first_seen=headers.get(HEADER_FIRST_SEEN),
            dead_lettered_at=(
                datetime.fromtimestamp(timestamp / 1000, UTC)
                if isinstance(timestamp, int) and timestamp >= 0
                else None
            ),
            key=record.key,
            value=record.value if record.value is not None else b"",
        )


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


async def read_dead_letters(
    kafka: Mapping[str, object],
    topic: str,
    *,
    keep: Callable[[DeadLetter], bool] = lambda _entry: True,
    limit: int | None = None,
    timeout_s: float = 60.0,
) -> list[DeadLetter]:
    """Every dead letter up to the end offsets seen at the start, ordered by handle.

    ``keep`` filters while reading (so the values of unselected messages are not held);
    ``limit`` keeps the first N kept entries in handle order.
    """
    consumer = AIOKafkaConsumer(
        **kafka,
        group_id=None,
        client_id="paygate-dlq",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    try:
        await consumer.start()
    except BaseException:
        await consumer.stop()
        raise
    try:
        partitions = await _partitions(consumer, topic)
        consumer.assign(partitions)
        beginning: dict[TopicPartition, int] = await consumer.beginning_offsets(partitions)
        end: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        for tp in partitions:
            consumer.seek(tp, beginning[tp])
        kept: dict[TopicPartition, list[DeadLetter]] = {tp: [] for tp in partitions}
        pending = {tp for tp in partitions if beginning[tp] < end[tp]}
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise DlqError(f"reading {topic} did not reach its end within {timeout_s:.0f}s")
            batches = await consumer.getmany(*pending, timeout_ms=200)
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= end[tp]:
                        break
                    entry = DeadLetter.from_record(record)
                    if keep(entry):
                        kept[tp].append(entry)
            for tp in list(pending):
                done = await consumer.position(tp) >= end[tp]
                full = limit is not None and len(kept[tp]) >= limit
                if done or full:
                    pending.discard(tp)
                    consumer.pause(tp)
        entries = sorted((e for es in kept.values() for e in es), key=lambda e: e.handle)
        return entries if limit is None else entries[:limit]
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    # Fresh metadata: the consumer's own may predate the topic. (aiokafka has no public
    # call that returns partitions of a topic not subscribed to.)
    cluster = await consumer._client.fetch_all_metadata()
    found = cluster.partitions_for_topic(topic)
    if not found:
        raise DlqError(f"topic {topic} does not exist (is PAYGATE_DLQ_TOPIC right?)")
    return [TopicPartition(topic, p) for p in sorted(found)]
