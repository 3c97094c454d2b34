"""Client scope on a real broker: refunds, captures and cancels naming another client scope
than their payment's are refused ``not_found`` with a result event; the payment's own scope
goes ahead, and a v1 command (no ``clientId``) still works for an upstream service's payment."""

from __future__ import annotations

import io
import struct

import fastavro
import pytest

from domain.events import PaymentResult, RefundResult
from domain.payments import payment_request_id_for
from domain.refunds import RefundStatus, refund_id_for
from domain.status import PaymentStatus
from providers.sandbox import InProcessSandboxProvider
from providers.sandbox.records import SandboxStatus
from schemas.codec import CANCEL_PAYMENT, CAPTURE_PAYMENT, REFUND_PAYMENT, AvroCodec
from schemas.payments import PaymentMessages
from schemas.registry import FileSchemaRegistry
from tests.support.builders import (
    capture_payment_record,
    encoded_command,
    refund_payment_record,
)
from tests.support.consumer_run import running_consumer
from tests.support.kafka_io import produce, read_until

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()
FILES = FileSchemaRegistry.bundled()
CODEC = AvroCodec(FILES)
REFUND_V1_ID = 4  # refund_payment.v1.avsc: written by producers built before clientId


def _written_with(schema_id: int, record: dict[str, object]) -> bytes:
    """``record`` in the wire format under an older schema id, as an old producer sends it."""
    schema = FILES.schema(schema_id)
    assert schema is not None
    out = io.BytesIO()
    out.write(struct.pack(">bI", 0, schema_id))
    fastavro.schemaless_writer(out, schema, record)
    return out.getvalue()


async def test_refunds_and_captures_are_answered_only_in_their_payments_scope(topics):
    # Alice's payment (taken at once) and her authorize-only one; an upstream service's.
    paid_key, paid_value, paid = encoded_command(clientId="alice")
    held_key, held_value, held = encoded_command(clientId="alice", capture=False)
    up_key, up_value, upstream = encoded_command()
    paid_id = payment_request_id_for(paid["orderId"], paid["idempotencyKey"], client_id="alice")
    held_id = payment_request_id_for(held["orderId"], held["idempotencyKey"], client_id="alice")
    up_id = payment_request_id_for(upstream["orderId"], upstream["idempotencyKey"])

    def refund(payment_id: str, order_id: str, client_id: str | None):
        return refund_payment_record(
            paymentRequestId=payment_id, orderId=order_id, clientId=client_id
        )

    by_bob = refund(paid_id, paid["orderId"], "bob")
    by_upstream = refund(paid_id, paid["orderId"], None)
    by_alice = refund(paid_id, paid["orderId"], "alice")
    alice_on_upstream = refund(up_id, upstream["orderId"], "alice")
    v1_on_upstream = refund(up_id, upstream["orderId"], None)
    del v1_on_upstream["clientId"]
    capture_by_bob = capture_payment_record(
        paymentRequestId=held_id, orderId=held["orderId"], clientId="bob"
    )
    capture_by_alice = capture_payment_record(
        paymentRequestId=held_id, orderId=held["orderId"], clientId="alice"
    )
    await produce(
        topics.kafka_bootstrap_servers,
        topics.commands_topic,
        [
            (paid_key, paid_value),
            (held_key, held_value),
            (up_key, up_value),
            *[(paid_key, CODEC.encode(REFUND_PAYMENT, r)) for r in (by_bob, by_upstream, by_alice)],
            (up_key, CODEC.encode(REFUND_PAYMENT, alice_on_upstream)),
            (up_key, _written_with(REFUND_V1_ID, v1_on_upstream)),
            (held_key, CODEC.encode(CAPTURE_PAYMENT, capture_by_bob)),
            (held_key, CODEC.encode(CAPTURE_PAYMENT, capture_by_alice)),
        ],
    )
    provider = InProcessSandboxProvider()
    async with running_consumer(topics, provider) as metrics:
        # 3 payments, 5 refunds, a refused capture and a captured payment.
        records = await read_until(
            topics.kafka_bootstrap_servers, topics.results_topic, lambda rs: len(rs) >= 10
        )
    events = [MESSAGES.decode_any_result(r.value) for r in records]
    refunds = {e.refund_id: e for e in events if isinstance(e, RefundResult)}

    def refund_result(payment_id: str, record: dict[str, object]) -> RefundResult:
        return refunds[refund_id_for(payment_id, str(record["idempotencyKey"]))]

    for foreign in (
        refund_result(paid_id, by_bob),
        refund_result(paid_id, by_upstream),
        refund_result(up_id, alice_on_upstream),
    ):
        assert foreign.status is RefundStatus.FAILED
        assert foreign.error is not None
        assert foreign.error.code.value == "not_found"
        # Nothing about the payment: its status and totals are those of an unknown one.
        assert (foreign.payment_status, foreign.payment_refunded_minor) == (None, None)
    assert refund_result(paid_id, by_alice).status is RefundStatus.SUCCEEDED
    assert refund_result(up_id, v1_on_upstream).status is RefundStatus.SUCCEEDED
    assert len(await provider.acquirer.refunds()) == 2

    held_events = [
        e for e in events if isinstance(e, PaymentResult) and e.payment_request_id == held_id
    ]
    assert [(e.status, e.error and e.error.code.value) for e in held_events] == [
        (PaymentStatus.AUTHORIZED, None),
        (PaymentStatus.AUTHORIZED, "not_found"),  # bob's capture, refused
        (PaymentStatus.SUCCEEDED, None),  # alice's
    ]
    assert metrics.commands_consumed.labels("refund", "refused")._value.get() == 3
    assert metrics.commands_consumed.labels("capture", "refused")._value.get() == 1


async def test_cancels_are_answered_only_in_their_payments_scope(topics):
    """Alice's hold: bob's and an upstream service's cancels are refused not_found (and
    void nothing), then hers voids it. An upstream service's hold: alice's cancel is
    refused, then one without a clientId voids it."""
    alice_key, alice_value, alice = encoded_command(clientId="alice", capture=False)
    up_key, up_value, upstream = encoded_command(capture=False)
    alice_id = payment_request_id_for(alice["orderId"], alice["idempotencyKey"], client_id="alice")
    up_id = payment_request_id_for(upstream["orderId"], upstream["idempotencyKey"])

    def cancel(payment_id: str, order_id: str, client_id: str | None) -> bytes:
        record = capture_payment_record(
            paymentRequestId=payment_id, orderId=order_id, clientId=client_id
        )
        return CODEC.encode(CANCEL_PAYMENT, record)

    await produce(
        topics.kafka_bootstrap_servers,
        topics.commands_topic,
        [
            (alice_key, alice_value),
            (up_key, up_value),
            (alice_key, cancel(alice_id, alice["orderId"], "bob")),
            (alice_key, cancel(alice_id, alice["orderId"], None)),
            (alice_key, cancel(alice_id, alice["orderId"], "alice")),
            (up_key, cancel(up_id, upstream["orderId"], "alice")),
            (up_key, cancel(up_id, upstream["orderId"], None)),
        ],
    )
    provider = InProcessSandboxProvider()
    async with running_consumer(topics, provider) as metrics:
        # 2 payments, 3 refused cancels and 2 canceled payments.
        records = await read_until(
            topics.kafka_bootstrap_servers, topics.results_topic, lambda rs: len(rs) >= 7
        )
    events = [MESSAGES.decode_any_result(r.value) for r in records]
    assert all(isinstance(e, PaymentResult) for e in events)

    def of(payment_id: str) -> list[tuple[PaymentStatus, str | None]]:
        return [
            (e.status, None if e.error is None else e.error.code.value)
            for e in events
            if isinstance(e, PaymentResult) and e.payment_request_id == payment_id
        ]

    assert of(alice_id) == [
        (PaymentStatus.AUTHORIZED, None),
        (PaymentStatus.AUTHORIZED, "not_found"),  # bob's cancel, refused
        (PaymentStatus.AUTHORIZED, "not_found"),  # the upstream scope's, refused
        (PaymentStatus.CANCELED, None),  # alice's
    ]
    assert of(up_id) == [
        (PaymentStatus.AUTHORIZED, None),
        (PaymentStatus.AUTHORIZED, "not_found"),  # alice's cancel, refused
        (PaymentStatus.CANCELED, None),  # the upstream scope's own
    ]
    charges = {c.payment_reference: c for c in await provider.acquirer.charges()}
    assert charges[alice_id].status is SandboxStatus.CANCELED
    assert charges[up_id].status is SandboxStatus.CANCELED
    assert metrics.commands_consumed.labels("cancel", "refused")._value.get() == 3
    assert metrics.commands_consumed.labels("cancel", "canceled")._value.get() == 2
