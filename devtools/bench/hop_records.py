"""The Kafka marks of the hops: when each order's command and result records were made.

A record's timestamp is its CreateTime: the epoch milliseconds at which the producer took
the record into its batch (aiokafka stamps it in ``send()``), so the producer's linger,
the trip to the broker and the broker's write come after the mark, in the next hop. A
topic with LogAppendTime would stamp the broker's clock instead: refused, so a hop always
means the same.

Both topics are the stack's own, read from the beginning to the end offsets they have once
every request was answered: nothing is missed, and nothing is waited for that never comes.
"""

from __future__ import annotations

import time
from typing import Final

from aiokafka import AIOKafkaConsumer, TopicPartition

from devtools.bench.environment import BenchError
from paygate.kafka_security import kafka_client_options
from paygate.settings import Settings
from schemas.codec import CodecError
from schemas.payments import PaymentMessages

_CREATE_TIME: Final = 0
_READ_TIMEOUT_S: Final = 60.0


async def command_times(settings: Settings) -> dict[str, float]:
    """Per order id, the CreateTime (epoch seconds) of its first command record."""
    times: dict[str, float] = {}
    for key, _value, at in await _records(settings, settings.commands_topic):
        times.setdefault(key, at)
    return times


async def result_times(settings: Settings) -> dict[str, float]:
    """Per order id, the CreateTime (epoch seconds) of its first result record that ends a
    client's wait (the record the facade's waiter answered on)."""
    messages = PaymentMessages.bundled()
    times: dict[str, float] = {}
    for key, value, at in await _records(settings, settings.results_topic):
        if key in times:
            continue
        try:
            event = messages.decode_result(value)
        except CodecError as exc:
            raise BenchError(f"a result record of order {key!r} is not a payment's: {exc}") from exc
        if event.status.ends_a_wait:
            times[key] = at
    return times


async def _records(settings: Settings, topic: str) -> list[tuple[str, bytes, float]]:
    """Every record of ``topic`` now: (key, value, CreateTime in seconds), in offset order
    per partition."""
    consumer = AIOKafkaConsumer(
        topic,
        **kafka_client_options(settings),
        # No group: every partition of the topic is this consumer's, from the earliest.
        group_id=None,
        client_id="paygate-bench-hops",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()  # returns once the topic's metadata (its partitions) is known
    try:
        partitions = sorted(consumer.assignment())
        if not partitions:
            raise BenchError(f"topic {topic} has no partitions the bench can see")
        ends = await consumer.end_offsets(partitions)
        records: list[tuple[str, bytes, float]] = []
        deadline = time.monotonic() + _READ_TIMEOUT_S
        while not await _at_ends(consumer, ends):
            if time.monotonic() > deadline:
                raise BenchError(f"could not read {topic} to its end in {_READ_TIMEOUT_S:.0f} s")
            batches = await consumer.getmany(*partitions, timeout_ms=500)
            for batch in batches.values():
                for record in batch:
                    if record.timestamp_type != _CREATE_TIME:
                        raise BenchError(f"{topic} stamps LogAppendTime, not CreateTime")
                    key = record.key.decode() if record.key is not None else ""
                    records.append((key, record.value or b"", record.timestamp / 1000))
        return records
    finally:
        await consumer.stop()


async def _at_ends(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for partition, end in ends.items():
        if await consumer.position(partition) < end:
            return False
    return True
