"""KafkaProducer.stop is bounded: records Kafka never acknowledges are failed, not waited for.

Against a stand-in for aiokafka's producer whose flush, like the real one while the broker
is unreachable, never finishes, and whose stop, like the real one, waits until every
queued batch is done."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiokafka.errors import KafkaTimeoutError

from producer.kafka_producer import KafkaProducer

pytestmark = pytest.mark.unit


class Accumulator:
    def __init__(self) -> None:
        self.drained = asyncio.Event()
        self.failed_with: BaseException | None = None

    def fail_all(self, exception: BaseException) -> None:
        self.failed_with = exception
        self.drained.set()


class UnreachableBrokerProducer:
    def __init__(self) -> None:
        self._message_accumulator = Accumulator()
        self.stopped = False

    async def flush(self) -> None:
        await self._message_accumulator.drained.wait()

    async def stop(self) -> None:
        await self._message_accumulator.drained.wait()
        self.stopped = True


async def test_stop_fails_what_kafka_did_not_acknowledge_in_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    producer = KafkaProducer({"bootstrap_servers": "127.0.0.1:1"}, stop_timeout_s=0.05)
    inner = UnreachableBrokerProducer()
    producer._producer = inner
    caplog.set_level(logging.WARNING, logger="devtools.kafka.producer")

    await producer.stop()

    assert inner.stopped
    assert isinstance(inner._message_accumulator.failed_with, KafkaTimeoutError)
    assert [r.getMessage() for r in caplog.records] == [
        "records not acknowledged within 0.05 s are dropped at stop"
    ]
    await producer.stop()  # safe twice


async def test_stop_with_everything_acknowledged_just_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    producer = KafkaProducer({"bootstrap_servers": "127.0.0.1:1"}, stop_timeout_s=0.05)
    inner = UnreachableBrokerProducer()
    inner._message_accumulator.drained.set()
    producer._producer = inner
    caplog.set_level(logging.WARNING, logger="devtools.kafka.producer")

    await producer.stop()

    assert inner.stopped
    assert inner._message_accumulator.failed_with is None
    assert caplog.records == []
