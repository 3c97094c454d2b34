"""The result listener with fake feeds and a fake store: bad records are survived, a broken
feed is replaced after a back-off, and readiness follows. No I/O, no real sleeps."""

from __future__ import annotations

import asyncio
import io
import json
import struct
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema
from prometheus_client import CollectorRegistry

from domain.status import PaymentStatus
from http_facade.result_events import ResultRecord
from http_facade.result_listener import ResultListener
from schemas.codec import AvroCodec
from schemas.payments import PaymentMessages, payment_result_to_record
from schemas.registry import FileSchemaRegistry, full_name_of
from schemas.registry_schemas import RegistrySchemas
from telemetry.metrics import Metrics
from telemetry.readiness import Readiness
from tests.support.result_events import (
    MESSAGES,
    encoded_payment_result,
    payment_result,
    unknown_schema_id_bytes,
)

pytestmark = pytest.mark.unit

PAYMENT_ID = "pay_" + "a" * 32


class FakeFeed:
    """Hands out what the test puts in: a batch of records, or an exception to raise."""

    def __init__(self) -> None:
        self.items: asyncio.Queue[Sequence[ResultRecord] | Exception] = asyncio.Queue()
        self.closed = False
        self._offset = 0

    def put(self, *values: bytes | None) -> None:
        batch = []
        for value in values:
            batch.append(ResultRecord(value=value, partition=0, offset=self._offset))
            self._offset += 1
        self.items.put_nowait(batch)

    def fail(self, error: Exception) -> None:
        self.items.put_nowait(error)

    async def next_batch(self) -> Sequence[ResultRecord]:
        item = await self.items.get()
        if isinstance(item, Exception):
            raise item
        return item

    async def close(self) -> None:
        assert not self.closed, "a feed is closed once"
        self.closed = True


class FakeFeeds:
    """The listener's ``open_feed``: a new FakeFeed per call, or the next scripted error."""

    def __init__(self) -> None:
        self.opened: list[FakeFeed] = []
        self.open_errors: list[Exception] = []
        self._changed = asyncio.Condition()

    async def __call__(self) -> FakeFeed:
        async with self._changed:
            if self.open_errors:
                raise self.open_errors.pop(0)
            feed = FakeFeed()
            self.opened.append(feed)
            self._changed.notify_all()
            return feed

    async def wait_opened(self, count: int) -> FakeFeed:
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.opened) >= count)
        return self.opened[count - 1]


class FakeStore:
    """Payment queries and refund queries; ``looked_up`` is set on every lookup, so a test
    knows a waiter is registered (it registers before it looks)."""

    def __init__(self) -> None:
        self.final: set[str] = set()
        self.looked_up = asyncio.Event()

    async def get_payment(self, payment_request_id: str):
        self.looked_up.set()
        status = PaymentStatus.SUCCEEDED if payment_request_id in self.final else None
        return None if status is None else SimpleNamespace(status=status)

    async def get(self, refund_id: str) -> None:
        self.looked_up.set()  # no refund is ever final here


class GatedSleep:
    """The supervisor's sleep: records each back-off and holds it until the test releases
    it, so the test sees the listener in its back-off."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self._gates: list[asyncio.Future[None]] = []
        self._changed = asyncio.Condition()

    async def __call__(self, seconds: float) -> None:
        gate = asyncio.get_running_loop().create_future()
        async with self._changed:
            self.sleeps.append(seconds)
            self._gates.append(gate)
            self._changed.notify_all()
        await gate

    async def wait_sleeping(self, count: int) -> None:
        """Until the ``count``-th back-off has begun."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.sleeps) >= count)

    def release(self, count: int) -> None:
        self._gates[count - 1].set_result(None)


class Harness:
    def __init__(self, decoder: Any = MESSAGES) -> None:
        self.feeds = FakeFeeds()
        self.store = FakeStore()
        self.sleep = GatedSleep()
        self.metrics = Metrics(CollectorRegistry())
        self.listener = ResultListener(
            open_feed=self.feeds,
            decoder=decoder,
            queries=self.store,
            refunds=self.store,
            metrics=self.metrics,
            sleep=self.sleep,
        )

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    async def waiting(self, waited_id: str = PAYMENT_ID) -> asyncio.Task[bool]:
        """A request waiting (up to a generous bound) for ``waited_id``, registered."""
        self.store.looked_up.clear()
        task = asyncio.create_task(self.listener.wait_for_final(waited_id, 60.0))
        await self.store.looked_up.wait()
        return task


@pytest.fixture
async def harness():
    harness = Harness()
    await harness.listener.start()
    yield harness
    await harness.listener.stop()


GOOD = MESSAGES.encode_result(payment_result(PAYMENT_ID))


async def test_bad_records_before_a_good_one_do_not_stop_it_being_delivered(harness) -> None:
    feed = harness.feeds.opened[0]
    waiter = await harness.waiting()
    feed.put(
        b"raw garbage",
        encoded_payment_result(PAYMENT_ID, currency="ZZZ"),
        unknown_schema_id_bytes(),
        encoded_payment_result(PAYMENT_ID, status="no-such-status"),
        None,
    )
    feed.put(GOOD)
    assert await waiter is True
    errors = "paygate_result_listener_errors_total"
    assert harness.sample(errors, reason="undecodable") == 3.0
    assert harness.sample(errors, reason="invalid") == 2.0
    assert harness.sample(errors, reason="unexpected") == 0.0
    assert harness.sample("paygate_result_listener_restarts_total") == 0.0
    assert await harness.listener.is_ready()
    assert len(harness.feeds.opened) == 1


async def test_a_broken_feed_is_replaced_after_a_back_off_and_readiness_follows(harness) -> None:
    readiness = Readiness()
    readiness.add("result_listener", harness.listener.is_ready)
    assert (await readiness.report()).ready

    first = harness.feeds.opened[0]
    first.fail(RuntimeError("the consumer broke"))
    await harness.sleep.wait_sleeping(1)
    assert first.closed
    report = await readiness.report()
    assert report.checks == {"result_listener": False}
    assert not report.ready

    harness.sleep.release(1)
    second = await harness.feeds.wait_opened(2)
    waiter = await harness.waiting()
    second.put(GOOD)
    assert await waiter is True
    assert (await readiness.report()).ready
    assert harness.sample("paygate_result_listener_restarts_total") == 1.0
    assert harness.sleep.sleeps == [0.5]


async def test_a_failed_reconnect_backs_off_longer_and_tries_again(harness) -> None:
    harness.feeds.open_errors.append(ConnectionError("broker down"))
    harness.feeds.opened[0].fail(RuntimeError("the consumer broke"))
    await harness.sleep.wait_sleeping(1)
    harness.sleep.release(1)  # the reconnect fails: a second, longer back-off
    await harness.sleep.wait_sleeping(2)
    assert not await harness.listener.is_ready()
    harness.sleep.release(2)
    await harness.feeds.wait_opened(2)
    assert harness.sleep.sleeps == [0.5, 1.0]
    assert harness.sample("paygate_result_listener_restarts_total") == 2.0


async def test_a_result_published_while_reconnecting_is_found_in_the_store(harness) -> None:
    waiter = await harness.waiting()
    harness.feeds.opened[0].fail(RuntimeError("the consumer broke"))
    await harness.sleep.wait_sleeping(1)
    # The result lands while nobody listens; the new feed starts after it.
    harness.store.final.add(PAYMENT_ID)
    harness.sleep.release(1)
    assert await waiter is True


async def test_stop_closes_the_feed_and_is_safe_twice(harness) -> None:
    feed = harness.feeds.opened[0]
    await harness.listener.stop()
    await harness.listener.stop()
    assert feed.closed
    assert not await harness.listener.is_ready()


async def test_start_fails_when_the_first_feed_cannot_be_opened() -> None:
    harness = Harness()
    harness.feeds.open_errors.append(RuntimeError("topic payments.results does not exist"))
    with pytest.raises(RuntimeError, match="does not exist"):
        await harness.listener.start()
    assert not await harness.listener.is_ready()
    await harness.listener.stop()


class FakeSchemaRegistry:
    """The Confluent API client's two calls; ids from 501 on; ``down`` refuses every call."""

    def __init__(self) -> None:
        self.schemas: dict[int, str] = {}
        self.fetches: list[int] = []
        self.down = False

    async def register_schema(self, subject_name: str, schema: Schema) -> int:
        if self.down:
            raise ConnectionRefusedError("registry down")
        text = schema.schema_str or ""
        known = [i for i, s in self.schemas.items() if s == text]
        schema_id = known[0] if known else 501 + len(self.schemas)
        self.schemas[schema_id] = text
        return schema_id

    async def get_schema(self, schema_id: int) -> Schema:
        self.fetches.append(schema_id)
        if self.down:
            raise ConnectionRefusedError("registry down")
        return Schema(self.schemas[schema_id], "AVRO")


async def _registry_harness() -> tuple[Harness, FakeSchemaRegistry, RegistrySchemas]:
    registry = FakeSchemaRegistry()
    source = RegistrySchemas(registry)
    subjects = {full_name_of(raw): "s-" + full_name_of(raw) for raw in BUNDLED}
    await source.register_bundled(BUNDLED, subjects)
    harness = Harness(decoder=PaymentMessages(AvroCodec(source)))
    await harness.listener.start()
    return harness, registry, source


BUNDLED = FileSchemaRegistry.bundled_schemas()


async def _newer_paygates_result(registry: FakeSchemaRegistry, payment_id: str) -> bytes:
    """A result written by a newer paygate, whose PaymentResult gained a field: its schema
    is registered under a new id this facade has never seen."""
    newest = [raw for raw in BUNDLED if raw["name"] == "PaymentResult"][-1]
    extra = {"name": "region", "type": ["null", "string"], "default": None}
    newer = {**newest, "fields": [*newest["fields"], extra]}
    schema_id = await registry.register_schema("s", Schema(json.dumps(newer), "AVRO"))
    record = payment_result_to_record(payment_result(payment_id))
    out = io.BytesIO()
    out.write(struct.pack(">bI", 0, schema_id))
    fastavro.schemaless_writer(out, fastavro.parse_schema(newer), {**record, "region": "eu"})
    return out.getvalue()


async def test_a_result_with_a_new_registry_id_is_fetched_once_and_wakes_its_waiter() -> None:
    harness, registry, _ = await _registry_harness()
    try:
        first, second = "pay_" + "1" * 32, "pay_" + "2" * 32
        data = await _newer_paygates_result(registry, first)
        again = await _newer_paygates_result(registry, second)
        waiter = await harness.waiting(first)
        harness.feeds.opened[0].put(data)
        assert await waiter is True
        waiter = await harness.waiting(second)
        harness.feeds.opened[0].put(again)
        assert await waiter is True
        assert registry.fetches == [int.from_bytes(data[1:5], "big")]  # once, then cached
        assert harness.sample("paygate_result_listener_errors_total", reason="undecodable") == 0
    finally:
        await harness.listener.stop()


async def test_a_registry_outage_after_start_changes_nothing_for_known_ids() -> None:
    harness, registry, source = await _registry_harness()
    try:
        registry.down = True
        known = PaymentMessages(AvroCodec(source)).encode_result(payment_result(PAYMENT_ID))
        waiter = await harness.waiting()
        harness.feeds.opened[0].put(known)
        assert await waiter is True
        assert registry.fetches == []  # never asked
    finally:
        await harness.listener.stop()


async def test_while_the_registry_is_down_new_ids_are_asked_once_a_batch_and_waiters_recheck() -> (
    None
):
    harness, registry, _ = await _registry_harness()
    try:
        unseen = [await _newer_paygates_result(registry, "pay_" + c * 32) for c in "345"]
        registry.down = True
        waiter = await harness.waiting()
        # The result's event is one of those the facade cannot read now; it is in the store.
        harness.store.final.add(PAYMENT_ID)
        harness.feeds.opened[0].put(*unseen)
        assert await waiter is True
        assert len(registry.fetches) == 1  # one bounded try for the batch, not one a record
        registry.down = False
        waiter = await harness.waiting("pay_" + "6" * 32)
        harness.feeds.opened[0].put(await _newer_paygates_result(registry, "pay_" + "6" * 32))
        assert await waiter is True  # back: the id is fetched
    finally:
        await harness.listener.stop()
