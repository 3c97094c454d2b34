import dataclasses
import io
import itertools
import json
import struct
from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources

import fastavro
import pytest

from domain.cancels import CancelPayment
from domain.captures import CapturePayment
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode, PaygateError
from domain.events import PaymentResult, result_event_id
from domain.money import Money
from domain.next_action import NextAction, NextActionType
from domain.refunds import RefundPayment
from domain.status import PaymentStatus
from schemas.codec import (
    CANCEL_PAYMENT,
    CAPTURE_PAYMENT,
    CREATE_PAYMENT,
    AvroCodec,
    CodecError,
)
from schemas.payments import PaymentMessages, payment_result_to_record
from schemas.registry import FileSchemaRegistry
from tests.support.builders import (
    SUCCESS_CARD,
    capture_payment_record,
    create_payment,
    create_payment_record,
    refund_payment_record,
)

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    return AvroCodec(FileSchemaRegistry.bundled())


@pytest.fixture(scope="module")
def messages(codec) -> PaymentMessages:
    return PaymentMessages(codec)


def test_command_round_trip_keeps_every_field(messages):
    command = create_payment(amount=Money(123456, "BHD"))
    data = messages.encode_command(command)
    assert data[0] == 0
    assert struct.unpack(">I", data[1:5])[0] == 10  # the newest CreatePayment schema
    assert messages.decode_command(data) == command


def test_result_round_trip(messages):
    now = datetime(2026, 11, 26, 12, 0, 0, 123000, tzinfo=UTC)
    event = PaymentResult(
        event_id=result_event_id("pay_" + "0" * 32, PaymentStatus.FAILED),
        payment_request_id="pay_" + "0" * 32,
        order_id="order-1",
        user_id="user-1",
        status=PaymentStatus.FAILED,
        amount=Money(1050, "EUR"),
        provider="sandbox",
        provider_reference="ch_1",
        error=ErrorInfo(
            ErrorCode.INSUFFICIENT_FUNDS, "no funds", decline_code="insufficient_funds"
        ),
        created_at=now,
        occurred_at=now,
    )
    decoded = messages.decode_result(messages.encode_result(event))
    assert decoded == event
    assert decoded.payment_result is False


def test_event_ids_are_stable_per_payment_and_status():
    first = result_event_id("pay_1", PaymentStatus.SUCCEEDED)
    assert first == result_event_id("pay_1", PaymentStatus.SUCCEEDED)
    assert first != result_event_id("pay_1", PaymentStatus.PENDING)
    assert first != result_event_id("pay_2", PaymentStatus.SUCCEEDED)


def _valid_bytes(codec) -> bytes:
    return codec.encode(CREATE_PAYMENT, create_payment_record())


@pytest.mark.parametrize(
    ("mutate", "code", "reason"),
    [
        (lambda b: b"", ErrorCode.MALFORMED_MESSAGE, "truncated_header"),
        (lambda b: b[:3], ErrorCode.MALFORMED_MESSAGE, "truncated_header"),
        (lambda b: b"\x01" + b[1:], ErrorCode.MALFORMED_MESSAGE, "bad_magic_byte"),
        (lambda b: b'{"json": true}', ErrorCode.MALFORMED_MESSAGE, "bad_magic_byte"),
        (lambda b: b[:5] + b[5:20], ErrorCode.MALFORMED_MESSAGE, "truncated_body"),
        (lambda b: b[:5], ErrorCode.MALFORMED_MESSAGE, "truncated_body"),
        (lambda b: b + b"\x00\x01", ErrorCode.MALFORMED_MESSAGE, "trailing_bytes"),
        (
            lambda b: b"\x00" + struct.pack(">I", 999) + b[5:],
            ErrorCode.UNKNOWN_SCHEMA,
            "unknown_id",
        ),
        (
            lambda b: b"\x00" + struct.pack(">I", 2) + b[5:],
            ErrorCode.UNKNOWN_SCHEMA,
            "unexpected_record",
        ),
    ],
    ids=[
        "empty",
        "short-header",
        "bad-magic",
        "json",
        "truncated-body",
        "header-only",
        "trailing-bytes",
        "unknown-schema-id",
        "wrong-record-type",
    ],
)
def test_malformed_messages_raise_codec_errors(codec, mutate, code, reason):
    with pytest.raises(CodecError) as caught:
        codec.decode(mutate(_valid_bytes(codec)), CREATE_PAYMENT)
    assert caught.value.code is code
    assert caught.value.reason == reason


def test_garbage_body_is_malformed(codec):
    data = b"\x00" + struct.pack(">I", 1) + b"\xff" * 40
    with pytest.raises(CodecError) as caught:
        codec.decode(data, CREATE_PAYMENT)
    assert caught.value.code is ErrorCode.MALFORMED_MESSAGE


@pytest.mark.parametrize(
    ("overrides", "code", "param"),
    [
        ({"amount": Decimal("-1.00")}, ErrorCode.INVALID_AMOUNT, "amount"),
        ({"amount": Decimal("0")}, ErrorCode.INVALID_AMOUNT, "amount"),
        ({"amount": Decimal("10.001")}, ErrorCode.INVALID_AMOUNT, "amount"),
        ({"currency": "XYZ"}, ErrorCode.UNSUPPORTED_CURRENCY, "currency"),
        ({"orderId": ""}, ErrorCode.INVALID_REQUEST, "orderId"),
        ({"idempotencyKey": "x" * 256}, ErrorCode.INVALID_REQUEST, "idempotencyKey"),
        ({"paymentMethod": "cash"}, ErrorCode.INVALID_REQUEST, "paymentMethod"),
        (
            {"payerAccount": {"type": "card", "number": "1", "holderName": None}},
            ErrorCode.INVALID_REQUEST,
            "payerAccount.number",
        ),
    ],
)
def test_decodable_but_invalid_values_raise_domain_errors(codec, messages, overrides, code, param):
    data = codec.encode(CREATE_PAYMENT, create_payment_record(**overrides))
    with pytest.raises(PaygateError) as caught:
        messages.decode_command(data)
    assert not isinstance(caught.value, CodecError)
    assert caught.value.code is code
    assert caught.value.param == param
    assert SUCCESS_CARD not in caught.value.message


def test_a_newer_reader_schema_reads_messages_of_an_older_writer():
    # BACKWARD compatibility: a field added with a default is filled in for old messages.
    current = json.loads(
        resources.files("schemas").joinpath("avro", "create_payment.v1.avsc").read_text()
    )
    older = dict(current, fields=[f for f in current["fields"] if f["name"] != "metadata"])
    codec = AvroCodec(FileSchemaRegistry({1: older, 5: current}))
    record = create_payment_record()
    del record["metadata"]
    out = io.BytesIO()
    out.write(b"\x00" + struct.pack(">I", 1))
    fastavro.schemaless_writer(out, fastavro.parse_schema(older), record)
    decoded = codec.decode(out.getvalue(), CREATE_PAYMENT)
    assert decoded["metadata"] == {}
    assert decoded["orderId"] == record["orderId"]


def _raw_schema(file_name: str) -> dict:
    return json.loads(resources.files("schemas").joinpath("avro", file_name).read_text())


def test_messages_written_with_create_payment_v1_still_decode():
    # Upstream producers built before v2 keep sending schema id 1, without newAttempt.
    record = create_payment_record()
    out = io.BytesIO()
    out.write(b"\x00" + struct.pack(">I", 1))
    fastavro.schemaless_writer(
        out, fastavro.parse_schema(_raw_schema("create_payment.v1.avsc")), record
    )
    command = PaymentMessages.bundled().decode_command(out.getvalue())
    assert command.new_attempt is False
    assert command.order_id == record["orderId"]


def test_new_commands_are_written_with_the_newest_schema(messages):
    data = messages.encode_command(create_payment())
    assert struct.unpack(">I", data[1:5])[0] == 10


def test_each_schema_version_is_backward_compatible_with_the_one_before():
    """BACKWARD: a reader on version n reads data of version n-1. Fields may be added only
    with a default; a field keeps its type, or widens it to a union that holds it (v4's
    optional account number), in records nested at any depth; removed fields need nothing.
    (The Schema Registry's own checker runs in tests/integration/test_schema_compatibility.py.)"""
    index = json.loads(resources.files("schemas").joinpath("schema_ids.json").read_text())
    by_name: dict[str, list[dict]] = {}
    for schema_id in sorted(index["schemas"], key=int):
        raw = _raw_schema(index["schemas"][schema_id])
        by_name.setdefault(f"{raw['namespace']}.{raw['name']}", []).append(raw)
    assert by_name
    for versions in by_name.values():
        for older, newer in itertools.pairwise(versions):
            _record_reads(newer, older)


def _record_reads(newer: dict, older: dict) -> None:
    old_fields = {f["name"]: f for f in older["fields"]}
    for field in newer["fields"]:
        if field["name"] in old_fields:
            assert _reads(field["type"], old_fields[field["name"]]["type"]), field["name"]
        else:
            assert "default" in field, f"{field['name']} was added without a default"


def _reads(new: object, old: object) -> bool:
    """Whether a reader of type ``new`` reads data written with type ``old``."""
    if new == old:
        return True
    if isinstance(new, dict) and isinstance(old, dict) and new.get("type") == "record":
        _record_reads(new, old)
        return old.get("type") == "record" and new["name"] == old["name"]
    if isinstance(new, list) and not isinstance(old, list):
        return any(_reads(branch, old) for branch in new)
    return False


@pytest.mark.parametrize("client_id", ["client-1", None])
def test_capture_command_round_trip_with_its_client_scope(messages, client_id):
    command = CapturePayment.create(
        payment_request_id="pay_" + "3" * 32,
        order_id="order-1",
        requested_at=datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
        client_id=client_id,
    )
    data = messages.encode_capture(command)
    assert struct.unpack(">I", data[1:5])[0] == 9  # capture_payment.v2: clientId and amount
    assert messages.decode_any_command(data) == command


def test_a_partial_capture_round_trips_exactly(messages):
    command = CapturePayment.create(
        payment_request_id="pay_" + "3" * 32,
        order_id="order-1",
        requested_at=datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
        client_id="client-1",
        amount=Decimal("12.35"),
    )
    data = messages.encode_capture(command)
    assert struct.unpack(">I", data[1:5])[0] == 9
    decoded = messages.decode_any_command(data)
    assert isinstance(decoded, CapturePayment)
    assert decoded.amount == Decimal("12.35")
    assert decoded.client_id == "client-1"


def test_a_capture_written_with_v1_reads_as_a_whole_capture(messages):
    """Schema id 7 (no amount) still decodes: the reader's v2 fills in null."""
    out = io.BytesIO()
    out.write(struct.pack(">bI", 0, 7))
    record = {
        "paymentRequestId": "pay_" + "3" * 32,
        "orderId": "order-1",
        "requestedAt": datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
    }
    v1 = FileSchemaRegistry.bundled().schema(7)
    assert v1 is not None
    fastavro.schemaless_writer(out, v1, record)
    decoded = messages.decode_any_command(out.getvalue())
    assert isinstance(decoded, CapturePayment)
    assert decoded.amount is None
    assert decoded.client_id is None


@pytest.mark.parametrize("client_id", ["client-1", None])
def test_cancel_command_round_trip_with_its_client_scope(messages, client_id):
    command = CancelPayment.create(
        payment_request_id="pay_" + "3" * 32,
        order_id="order-1",
        requested_at=datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
        client_id=client_id,
    )
    data = messages.encode_cancel(command)
    assert struct.unpack(">I", data[1:5])[0] == 14  # cancel_payment.v1, with clientId
    decoded = messages.decode_any_command(data)
    assert decoded == command
    assert isinstance(decoded, CancelPayment)
    assert decoded.client_id == client_id


@pytest.mark.parametrize("client_id", ["client-1", None])
def test_refund_command_round_trip_with_its_client_scope(messages, client_id):
    command = RefundPayment.create(
        idempotency_key="refund-1",
        payment_request_id="pay_" + "3" * 32,
        order_id="order-1",
        amount=Money(1_050, "EUR"),
        reason="duplicate",
        requested_at=datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
        client_id=client_id,
    )
    data = messages.encode_refund(command)
    assert struct.unpack(">I", data[1:5])[0] == 8  # refund_payment.v2: with clientId
    assert messages.decode_any_command(data) == command


@pytest.mark.parametrize(
    ("schema_id", "file_name", "record"),
    [
        (4, "refund_payment.v1.avsc", refund_payment_record()),
        (7, "capture_payment.v1.avsc", capture_payment_record()),
    ],
)
def test_a_follow_up_written_before_client_scopes_reads_as_the_upstream_scope(
    schema_id, file_name, record
):
    out = io.BytesIO()
    out.write(b"\x00" + struct.pack(">I", schema_id))
    fastavro.schemaless_writer(out, fastavro.parse_schema(_raw_schema(file_name)), record)
    command = PaymentMessages.bundled().decode_any_command(out.getvalue())
    assert isinstance(command, RefundPayment | CapturePayment)
    assert command.client_id is None
    assert command.payment_request_id == record["paymentRequestId"]


@pytest.mark.parametrize(
    ("subject", "record"),
    [
        (CAPTURE_PAYMENT, capture_payment_record()),
        # A cancel's other fields are a capture's without an amount.
        (CANCEL_PAYMENT, capture_payment_record()),
    ],
)
def test_a_follow_ups_client_id_obeys_the_identifier_rule(messages, subject, record):
    record = {**record, "clientId": "not an id"}
    data = AvroCodec(FileSchemaRegistry.bundled()).encode(subject, record)
    with pytest.raises(PaygateError) as refused:
        messages.decode_any_command(data)
    assert (refused.value.code, refused.value.param) == (ErrorCode.INVALID_REQUEST, "clientId")


def test_a_result_with_a_next_action_round_trips_and_v1_results_still_decode(messages):
    now = datetime(2026, 11, 26, 12, 0, 0, 123000, tzinfo=UTC)
    event = PaymentResult(
        event_id=result_event_id("pay_" + "0" * 32, PaymentStatus.REQUIRES_ACTION),
        payment_request_id="pay_" + "0" * 32,
        order_id="order-1",
        user_id="user-1",
        status=PaymentStatus.REQUIRES_ACTION,
        amount=Money(1050, "CNY"),
        provider="alipay",
        provider_reference=None,
        error=None,
        created_at=now,
        occurred_at=now,
        next_action=NextAction.of(NextActionType.QR_CODE, "https://qr.alipay.com/bax1", now),
    )
    data = messages.encode_result(event)
    assert struct.unpack(">I", data[1:5])[0] == 17  # payment_result.v4, the newest
    assert messages.decode_result(data) == event

    # A reader on v1 (an upstream service not upgraded yet) reads v2 events, without the
    # action; events written with v1 (before the upgrade) read as having none.
    v1 = fastavro.parse_schema(_raw_schema("payment_result.v1.avsc"))
    v2 = fastavro.parse_schema(_raw_schema("payment_result.v2.avsc"))
    old_reader = fastavro.schemaless_reader(io.BytesIO(data[5:]), v2, v1)
    assert isinstance(old_reader, dict)
    assert old_reader["status"] == "requires_action"
    assert "nextAction" not in old_reader
    settled = dataclasses.replace(event, status=PaymentStatus.SUCCEEDED, next_action=None)
    record = payment_result_to_record(settled)
    del record["nextAction"], record["capturedAmount"]
    out = io.BytesIO()
    out.write(b"\x00" + struct.pack(">I", 2))
    fastavro.schemaless_writer(out, v1, record)
    assert messages.decode_result(out.getvalue()) == settled


def test_a_result_with_a_captured_amount_round_trips_and_v1_v2_readers_still_read_it(messages):
    now = datetime(2026, 12, 6, 12, 0, 0, 123000, tzinfo=UTC)
    event = PaymentResult(
        event_id=result_event_id("pay_" + "1" * 32, PaymentStatus.SUCCEEDED),
        payment_request_id="pay_" + "1" * 32,
        order_id="order-1",
        user_id="user-1",
        status=PaymentStatus.SUCCEEDED,
        amount=Money(5_000, "JPY"),
        provider="sandbox",
        provider_reference="ch_1",
        error=None,
        created_at=now,
        occurred_at=now,
        captured_amount=Money(1_234, "JPY"),
    )
    data = messages.encode_result(event)
    assert struct.unpack(">I", data[1:5])[0] == 17  # payment_result.v4, the newest
    decoded = messages.decode_result(data)
    assert decoded == event
    # The same decimal representation as amount: currency units, the currency's decimals.
    assert payment_result_to_record(event)["capturedAmount"] == Decimal("1234")
    three_decimals = dataclasses.replace(
        event, amount=Money(50_000, "BHD"), captured_amount=Money(12_345, "BHD")
    )
    assert payment_result_to_record(three_decimals)["capturedAmount"] == Decimal("12.345")
    assert messages.decode_result(messages.encode_result(three_decimals)) == three_decimals

    # Readers on v1 and v2 read v3 events: the same fields, capturedAmount left out.
    v3 = fastavro.parse_schema(_raw_schema("payment_result.v3.avsc"))
    for old_file in ("payment_result.v1.avsc", "payment_result.v2.avsc"):
        reader = fastavro.parse_schema(_raw_schema(old_file))
        old = fastavro.schemaless_reader(io.BytesIO(data[5:]), v3, reader)
        assert isinstance(old, dict)
        assert (old["status"], old["amount"], old["currency"]) == ("succeeded", 5000, "JPY")
        assert "capturedAmount" not in old

    # Events written with v2 (before the upgrade) read as having no captured amount.
    record = payment_result_to_record(event)
    del record["capturedAmount"]
    out = io.BytesIO()
    out.write(b"\x00" + struct.pack(">I", 12))
    v2 = fastavro.parse_schema(_raw_schema("payment_result.v2.avsc"))
    fastavro.schemaless_writer(out, v2, record)
    assert messages.decode_result(out.getvalue()) == dataclasses.replace(
        event, captured_amount=None
    )


def test_only_capturing_and_captured_events_carry_a_captured_amount():
    from domain.events import captured_in_event

    amount = Money(5_000, "EUR")
    assert captured_in_event(PaymentStatus.SUCCEEDED, amount, None) == amount
    assert captured_in_event(PaymentStatus.SUCCEEDED, amount, 2_000) == Money(2_000, "EUR")
    assert captured_in_event(PaymentStatus.CAPTURING, amount, 2_000) == Money(2_000, "EUR")
    assert captured_in_event(PaymentStatus.PARTIALLY_REFUNDED, amount, 2_000) == Money(2_000, "EUR")
    assert captured_in_event(PaymentStatus.REFUNDED, amount, None) == amount
    for status in (
        PaymentStatus.AUTHORIZED,
        PaymentStatus.CANCELED,
        PaymentStatus.EXPIRED,
        PaymentStatus.FAILED,
        PaymentStatus.PENDING,
        PaymentStatus.REQUIRES_ACTION,
    ):
        assert captured_in_event(status, amount, None) is None, status
