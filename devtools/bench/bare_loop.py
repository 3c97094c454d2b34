"""Case a, the baseline: the least a consume-then-produce service can do with aiokafka.

Configured like the pipeline where it matters for a fair ratio: the same consumer settings
(a group, manual commits, read_committed, batches of up to 500) and the same producer
settings as :class:`producer.kafka_producer.KafkaProducer` (idempotent, acks=all,
linger 5 ms). Each input's value is forwarded as is: no decoding, no database.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from devtools.bench.environment import BenchError
from devtools.bench.report import CaseResult
from devtools.bench.workload import CaseTopics

_BATCH_SIZE = 500  # CommandRunner's default batch size


async def run_bare_loop(
    kafka: Mapping[str, object], topics: CaseTopics, payments: int, stall_timeout_s: float
) -> CaseResult:
    producer = AIOKafkaProducer(
        **kafka,
        client_id="paygate-bench-bare",
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
    )
    await producer.start()
    try:
        consumer = AIOKafkaConsumer(
            topics.commands,
            **kafka,
            group_id=topics.group,
            client_id="paygate-bench-bare",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        await consumer.start()
        try:
            return await _consume_and_produce(
                consumer, producer, topics.results, payments, stall_timeout_s
            )
        finally:
            await consumer.stop()
    finally:
        await producer.stop()


async def _consume_and_produce(
    consumer: AIOKafkaConsumer,
    producer: AIOKafkaProducer,
    output_topic: str,
    payments: int,
    stall_timeout_s: float,
) -> CaseResult:
    handled = batches_seen = 0
    started: float | None = None
    started_cpu = 0.0
    last_progress = time.monotonic()
    while handled < payments:
        batches = await consumer.getmany(timeout_ms=200, max_records=_BATCH_SIZE)
        if not batches:
            if time.monotonic() - last_progress > stall_timeout_s:
                raise BenchError(
                    f"case a: no message for {stall_timeout_s:g} s after {handled} of "
                    f"{payments}; is the broker up and the topic filled?"
                )
            continue
        if started is None:
            # The clock starts at the first message, so joining the group is not timed.
            started = time.perf_counter()
            started_cpu = time.process_time()
        # Send all without awaiting each; the batch is done when every send is acked.
        acks = [
            await producer.send(output_topic, record.value, key=record.key)
            for records in batches.values()
            for record in records
        ]
        await asyncio.gather(*acks)
        await consumer.commit({tp: records[-1].offset + 1 for tp, records in batches.items()})
        handled += len(acks)
        batches_seen += 1
        last_progress = time.monotonic()
    assert started is not None
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - started_cpu
    return CaseResult(
        case="a",
        title="bare aiokafka loop: getmany, one output per input, commit per batch",
        payments=handled,
        elapsed_s=elapsed,
        cpu_s=cpu,
        details=(f"{batches_seen} batches, {handled / batches_seen:.0f} messages per batch",),
    )
