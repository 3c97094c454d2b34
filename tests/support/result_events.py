"""Result events as the results topic carries them: good ones, and bytes a listener must survive."""

from __future__ import annotations

import io
import json
import struct
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import fastavro

from domain.events import PaymentResult, RefundResult, refund_event_id, result_event_id
from domain.money import Money
from domain.refunds import RefundStatus
from domain.status import PaymentStatus
from schemas.codec import PAYMENT_RESULT, AvroCodec
from schemas.payments import PaymentMessages, payment_result_to_record
from schemas.registry import FileSchemaRegistry
from tests.support.builders import encoded_command

_CODEC = AvroCodec(FileSchemaRegistry.bundled())
MESSAGES = PaymentMessages(_CODEC)
_AT = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def payment_result(
    payment_request_id: str, status: PaymentStatus = PaymentStatus.SUCCEEDED
) -> PaymentResult:
    return PaymentResult(
        event_id=result_event_id(payment_request_id, status),
        payment_request_id=payment_request_id,
        order_id="order-1",
        user_id="user-1",
        status=status,
        amount=Money(1050, "EUR"),
        provider="sandbox",
        provider_reference="ch_1",
        error=None,
        created_at=_AT,
        occurred_at=_AT,
    )


def refund_result(refund_id: str, status: RefundStatus = RefundStatus.SUCCEEDED) -> RefundResult:
    return RefundResult(
        event_id=refund_event_id(refund_id, status),
        refund_id=refund_id,
        payment_request_id="pay_" + "1" * 32,
        order_id="order-1",
        status=status,
        currency="EUR",
        amount_minor=1050,
        reason=None,
        payment_status=PaymentStatus.REFUNDED,
        payment_refunded_minor=1050,
        provider="sandbox",
        provider_reference="re_1",
        error=None,
        created_at=_AT,
        occurred_at=_AT,
    )


def encoded_payment_result(payment_request_id: str, **overrides: Any) -> bytes:
    """A PaymentResult in the wire format, with record fields overridden as given: valid
    Avro whatever the values, such as ``currency="ZZZ"``, which the domain refuses."""
    record = payment_result_to_record(payment_result(payment_request_id))
    record.update(overrides)
    return _CODEC.encode(PAYMENT_RESULT, record)


def older_schema(file_name: str) -> Any:
    """A bundled schema version, parsed, e.g. ``payment_result.v3.avsc``."""
    text = resources.files("schemas").joinpath("avro", file_name).read_text()
    return fastavro.parse_schema(json.loads(text))


def written_with(schema_id: int, file_name: str, record: dict[str, Any]) -> bytes:
    """``record`` as a producer on an older schema writes it: in the wire format under
    ``schema_id``, the fields that version lacks dropped."""
    schema = older_schema(file_name)
    kept = {field["name"] for field in schema["fields"]}
    out = io.BytesIO()
    out.write(struct.pack(">bI", 0, schema_id))
    fastavro.schemaless_writer(out, schema, {k: v for k, v in record.items() if k in kept})
    return out.getvalue()


def unknown_schema_id_bytes() -> bytes:
    """The wire-format header with a schema id nobody registered, then some body."""
    return struct.pack(">bI", 0, 999_999) + b"\x02x"


def truncated_payment_result() -> bytes:
    return encoded_payment_result("pay_" + "2" * 32)[:12]


def command_bytes() -> bytes:
    """A valid command, on the results topic by mistake: a record of another kind."""
    return encoded_command()[1]
