"""The result listener on a real broker: bad events on the results topic do not keep a
waiting request from its result."""

from __future__ import annotations

import asyncio
import functools
import uuid

import pytest
from prometheus_client import CollectorRegistry

from http_facade.result_feed import KafkaResultFeed
from http_facade.result_listener import ResultListener
from telemetry.metrics import Metrics
from tests.support.kafka_io import produce
from tests.support.result_events import MESSAGES, encoded_payment_result, payment_result

pytestmark = pytest.mark.integration


class NothingFinalYet:
    """The store as the waiter sees it before the result: never final, so only the event
    on the topic can wake the waiter. ``looked_up`` says the waiter is registered."""

    def __init__(self) -> None:
        self.looked_up = asyncio.Event()

    async def get_payment(self, payment_request_id: str) -> None:
        self.looked_up.set()

    async def get(self, refund_id: str) -> None:
        self.looked_up.set()


async def test_bad_events_before_a_good_one_do_not_stop_its_delivery(topics) -> None:
    bootstrap, topic = topics.kafka_bootstrap_servers, topics.results_topic
    store = NothingFinalYet()
    metrics = Metrics(CollectorRegistry())
    listener = ResultListener(
        open_feed=functools.partial(KafkaResultFeed.open, {"bootstrap_servers": bootstrap}, topic),
        decoder=MESSAGES,
        queries=store,
        refunds=store,
        metrics=metrics,
    )
    payment_id = "pay_" + uuid.uuid4().hex
    await listener.start()
    try:
        # A generous bound, not a measurement: False (and a failed test) only if the
        # good event never arrives.
        waiter = asyncio.create_task(listener.wait_for_final(payment_id, 60.0))
        await store.looked_up.wait()
        key = b"order-1"  # one key, one partition: the bad events come first
        await produce(
            bootstrap,
            topic,
            [
                (key, encoded_payment_result(payment_id, currency="ZZZ")),
                (key, b"\xde\xad\xbe\xef raw garbage"),
                (key, MESSAGES.encode_result(payment_result(payment_id))),
            ],
        )
        assert await waiter is True
        assert await listener.is_ready()
    finally:
        await listener.stop()

    def errors(reason: str) -> float | None:
        return metrics.registry.get_sample_value(
            "paygate_result_listener_errors_total", {"reason": reason}
        )

    assert (errors("invalid"), errors("undecodable")) == (1.0, 1.0)
    assert metrics.registry.get_sample_value("paygate_result_listener_restarts_total") == 0.0
