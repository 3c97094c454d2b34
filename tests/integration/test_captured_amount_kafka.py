"""PaymentResult v3's capturedAmount on a real broker: the consumer publishes what each
capture took (partial, full, or a payment captured at once), with the newest schema id
(16 when v3 came, 17 since v4 added ``refusal``), and a reader still on v2 reads the same
bytes without the field."""

from __future__ import annotations

import io
import json
import struct
from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources

import fastavro
import pytest

from domain.events import PaymentResult
from domain.money import Money
from domain.payments import payment_request_id_for
from domain.status import PaymentStatus
from providers.sandbox import InProcessSandboxProvider
from schemas.codec import CAPTURE_PAYMENT, AvroCodec
from schemas.payments import PaymentMessages
from schemas.registry import FileSchemaRegistry
from tests.support.builders import encoded_command
from tests.support.consumer_run import running_consumer
from tests.support.kafka_io import produce, read_until

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()
CODEC = AvroCodec(FileSchemaRegistry.bundled())
AT = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
PAYMENT_RESULT_ID = 17  # v4: v3's capturedAmount, and refusal


def _v2_reader() -> fastavro.types.Schema:
    text = resources.files("schemas").joinpath("avro", "payment_result.v2.avsc").read_text()
    return fastavro.parse_schema(json.loads(text))


async def test_the_consumer_publishes_what_each_capture_took(topics):
    """Order P: authorize 50.00, capture 20.00. Order F: authorize 50.00, capture all.
    Order N: charged at once (capture true)."""
    key_p, create_p, record_p = encoded_command(amount=Decimal("50.00"), capture=False)
    key_f, create_f, record_f = encoded_command(amount=Decimal("50.00"), capture=False)
    key_n, create_n, record_n = encoded_command(amount=Decimal("12.30"))
    ids = {
        name: payment_request_id_for(record["orderId"], record["idempotencyKey"])
        for name, record in (("partial", record_p), ("full", record_f), ("now", record_n))
    }

    def capture(name: str, order_id: str, amount: Decimal | None) -> bytes:
        record = {"paymentRequestId": ids[name], "orderId": order_id, "requestedAt": AT}
        return CODEC.encode(CAPTURE_PAYMENT, {**record, "amount": amount})

    await produce(
        topics.kafka_bootstrap_servers,
        topics.commands_topic,
        [
            (key_p, create_p),
            (key_f, create_f),
            (key_n, create_n),
            (key_p, capture("partial", record_p["orderId"], Decimal("20.00"))),
            (key_f, capture("full", record_f["orderId"], None)),
        ],
    )
    async with running_consumer(topics, InProcessSandboxProvider()):
        records = await read_until(
            topics.kafka_bootstrap_servers, topics.results_topic, lambda rs: len(rs) >= 5
        )

    assert {struct.unpack(">I", r.value[1:5])[0] for r in records} == {PAYMENT_RESULT_ID}
    events = [MESSAGES.decode_any_result(r.value) for r in records]
    assert all(isinstance(e, PaymentResult) for e in events)
    seen = {
        (name, e.status): e.captured_amount
        for e in events
        if isinstance(e, PaymentResult)
        for name, payment_id in ids.items()
        if e.payment_request_id == payment_id
    }
    assert seen == {
        ("partial", PaymentStatus.AUTHORIZED): None,
        ("partial", PaymentStatus.SUCCEEDED): Money(2_000, "EUR"),
        ("full", PaymentStatus.AUTHORIZED): None,
        ("full", PaymentStatus.SUCCEEDED): Money(5_000, "EUR"),
        ("now", PaymentStatus.SUCCEEDED): Money(1_230, "EUR"),
    }

    # An upstream reader still on v2 reads the partial capture's event, without the field.
    [partial] = [
        r
        for r, e in zip(records, events, strict=True)
        if isinstance(e, PaymentResult)
        and e.payment_request_id == ids["partial"]
        and e.status is PaymentStatus.SUCCEEDED
    ]
    writer = FileSchemaRegistry.bundled().schema(PAYMENT_RESULT_ID)
    assert writer is not None
    old = fastavro.schemaless_reader(io.BytesIO(partial.value[5:]), writer, _v2_reader())
    assert isinstance(old, dict)
    assert (old["status"], old["amount"]) == ("succeeded", Decimal("50.00"))
    assert "capturedAmount" not in old
