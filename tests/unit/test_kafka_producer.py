"""KafkaProducer.stop is bounded: records Kafka never acknowledges are failed, not waited for.

Against a stand-in for aiokafka's producer whose flush, like the real one while the broker
is unreachable, never finishes, and whose stop, like the real one, waits until every
queued batch is done."""

from __future__ import annotations

import asyncio
import logging
from typing import ClassVar

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


class RecordingProducer:
    """Stands in for AIOKafkaProducer: keeps the options it was built with."""

    built: ClassVar[list[dict[str, object]]] = []

    def __init__(self, **options: object) -> None:
        RecordingProducer.built.append(options)

    async def start(self) -> None:
        pass

    async def flush(self) -> None:
        pass

    async def stop(self) -> None:
        pass


@pytest.mark.parametrize(("given", "expected"), [(None, 0), (5, 5), (20, 20)])
async def test_the_linger_is_the_one_given_and_durability_stays(
    monkeypatch: pytest.MonkeyPatch, given: int | None, expected: int
) -> None:
    RecordingProducer.built = []
    monkeypatch.setattr("producer.kafka_producer.AIOKafkaProducer", RecordingProducer)
    connection = {"bootstrap_servers": "127.0.0.1:1"}
    producer = (
        KafkaProducer(connection) if given is None else KafkaProducer(connection, linger_ms=given)
    )
    async with producer:
        pass
    [options] = RecordingProducer.built
    assert options["linger_ms"] == expected
    # Whatever the linger: every record acknowledged by all replicas, written once.
    assert options["acks"] == "all"
    assert options["enable_idempotence"] is True


def test_a_negative_linger_is_refused() -> None:
    with pytest.raises(ValueError, match="linger_ms"):
        KafkaProducer({"bootstrap_servers": "127.0.0.1:1"}, linger_ms=-1)
