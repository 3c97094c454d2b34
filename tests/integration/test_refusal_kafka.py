"""The ``refusal`` field on a real broker: a CreatePayment and a RefundPayment that reuse
a key with other parameters are answered, under the existing payment's and refund's ids,
by events with ``refusal: true`` (PaymentResult v4, schema id 17; RefundResult v2, id 18);
the payment's and refund's own events carry ``false``. A plain Avro reader, which knows
nothing of paygate's rules, reads the flag from the record; the facade's result listener
wakes only the request whose own command the refusal answers."""

from __future__ import annotations

import functools
import io
import struct
from decimal import Decimal

import fastavro
import pytest
from aiokafka import ConsumerRecord
from prometheus_client import CollectorRegistry

from domain.errors import ErrorCode
from domain.events import PaymentResult, RefundResult, conflict_event_id
from domain.payments import payment_request_id_for
from domain.refunds import RefundStatus, refund_id_for
from domain.status import PaymentStatus
from http_facade.result_feed import KafkaResultFeed
from http_facade.result_listener import ResultListener
from providers.sandbox import InProcessSandboxProvider
from schemas.payments import PaymentMessages, ResultEvent
from schemas.registry import FileSchemaRegistry
from telemetry.metrics import Metrics
from tests.support.builders import encoded_command, encoded_refund, unique
from tests.support.consumer_run import running_consumer
from tests.support.kafka_io import produce, read_until
from tests.support.result_events import payment_result

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()
SCHEMAS = FileSchemaRegistry.bundled()
PAYMENT_RESULT_ID = 17
REFUND_RESULT_ID = 18


def _events(records: list[ConsumerRecord]) -> list[ResultEvent]:
    return [MESSAGES.decode_any_result(r.value) for r in records]


def _plain_record(value: bytes) -> dict[str, object]:
    """The record as any Avro reader with the writer's schema sees it."""
    schema_id = struct.unpack(">I", value[1:5])[0]
    writer = SCHEMAS.schema(schema_id)
    assert writer is not None
    record = fastavro.schemaless_reader(io.BytesIO(value[5:]), writer, writer)
    assert isinstance(record, dict)
    return record


async def test_conflicting_commands_are_answered_by_events_marked_as_refusals(topics):
    key, create, record = encoded_command(amount=Decimal("30.00"))
    order_id, payment_key = record["orderId"], record["idempotencyKey"]
    _, conflicting_create, _ = encoded_command(
        amount=Decimal("50.00"), orderId=order_id, idempotencyKey=payment_key
    )
    payment_id = payment_request_id_for(order_id, payment_key)
    refund_key = unique("refund")
    refund_id = refund_id_for(payment_id, refund_key)

    def refund(amount: str) -> bytes:
        return encoded_refund(
            paymentRequestId=payment_id,
            orderId=order_id,
            idempotencyKey=refund_key,
            amount=Decimal(amount),
            currency="EUR",
        )

    await produce(
        topics.kafka_bootstrap_servers,
        topics.commands_topic,
        [(key, create), (key, conflicting_create), (key, refund("10.00")), (key, refund("5.00"))],
    )

    def answered(records: list[ConsumerRecord]) -> bool:
        events = _events(records)
        refusals = [e for e in events if e.refusal]
        refunded = [
            e for e in events if isinstance(e, RefundResult) and e.status is RefundStatus.SUCCEEDED
        ]
        return len(refusals) == 2 and len(refunded) == 1

    async with running_consumer(topics, InProcessSandboxProvider()):
        records = await read_until(topics.kafka_bootstrap_servers, topics.results_topic, answered)

    events = _events(records)
    by_kind = {
        (type(e).__name__, e.status.value, e.refusal): (r, e)
        for r, e in zip(records, events, strict=True)
    }
    assert set(by_kind) == {
        ("PaymentResult", "succeeded", False),
        ("PaymentResult", "failed", True),
        ("RefundResult", "succeeded", False),
        ("RefundResult", "failed", True),
    }, sorted(by_kind)

    for (kind, _, refusal), (raw, event) in by_kind.items():
        schema_id = struct.unpack(">I", raw.value[1:5])[0]
        plain = _plain_record(raw.value)
        assert plain["refusal"] is refusal
        if kind == "PaymentResult":
            assert isinstance(event, PaymentResult)
            assert (schema_id, event.payment_request_id) == (PAYMENT_RESULT_ID, payment_id)
        else:
            assert isinstance(event, RefundResult)
            assert (schema_id, event.refund_id) == (REFUND_RESULT_ID, refund_id)
        if refusal:
            assert event.error is not None
            assert event.error.code is ErrorCode.IDEMPOTENCY_CONFLICT
        else:
            assert event.error is None

    # The refusals carry the refused commands' amounts; the payment's own event stands.
    payment_refusal = by_kind[("PaymentResult", "failed", True)][1]
    payment_own = by_kind[("PaymentResult", "succeeded", False)][1]
    assert isinstance(payment_refusal, PaymentResult)
    assert isinstance(payment_own, PaymentResult)
    assert (payment_refusal.amount.minor_units, payment_own.amount.minor_units) == (5_000, 3_000)
    assert payment_own.status is PaymentStatus.SUCCEEDED

    # The facade's listener, on the consumer's own bytes: the refused request (which knows
    # the refusal's event id from its own parameters, fingerprinted as the facade does,
    # accounts in the clear) is woken; the payment's own request is not.
    conflicting = MESSAGES.decode_command(conflicting_create)
    own_refusal = conflict_event_id(
        payment_id, conflicting.parameters_fingerprint(topics.account_key)
    )
    assert own_refusal == payment_refusal.event_id
    raw_refusal = by_kind[("PaymentResult", "failed", True)][0].value
    await _only_the_refused_request_wakes(topics, payment_id, own_refusal, raw_refusal, key)


class NothingFinalYet:
    """The store as waiters see it: nothing final, so only events can wake them."""

    async def get_payment(self, payment_request_id: str) -> None:
        return None

    async def get(self, refund_id: str) -> None:
        return None


async def _only_the_refused_request_wakes(
    topics, payment_id: str, own_refusal: str, raw_refusal: bytes, key: bytes
) -> None:
    bootstrap, topic = topics.kafka_bootstrap_servers, topics.results_topic
    store = NothingFinalYet()
    listener = ResultListener(
        open_feed=functools.partial(KafkaResultFeed.open, {"bootstrap_servers": bootstrap}, topic),
        decoder=MESSAGES,
        queries=store,
        refunds=store,
        metrics=Metrics(CollectorRegistry()),
    )
    # After the refusal, on the same key (so the same partition, read in order): a final
    # result of another payment, whose waiter waking proves the refusal was handled.
    marker_id = payment_request_id_for(unique("order"), unique("key"))
    await listener.start()
    try:
        with (
            listener.watch(payment_id, refusal_event_id=own_refusal) as refused,
            listener.watch(payment_id) as owner,
            listener.watch(marker_id) as marker,
        ):
            await produce(
                bootstrap,
                topic,
                [(key, raw_refusal), (key, MESSAGES.encode_result(payment_result(marker_id)))],
            )
            # Generous bounds, not measurements: they fail only if the events never come.
            assert await marker.final(60.0)
            assert await refused.final(60.0)
            # Not woken: with no time left it reads the store, where nothing is final.
            assert not await owner.final(0)
    finally:
        await listener.stop()
