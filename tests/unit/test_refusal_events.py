"""The ``refusal`` field of result events (PaymentResult v4, schema id 17; RefundResult v2,
id 18): set on the answer to a command refused for reusing its idempotency key with other
parameters, which names an existing payment or refund but is no state of it.

Older readers ignore the field; events written before it read as the rule of their time
decides (domain.events.refusal_before_the_field), so paygate's readers treat both alike.
"""

from __future__ import annotations

import dataclasses
import io
import struct
from datetime import UTC, datetime

import fastavro
import pytest

from domain.error_info import ErrorInfo
from domain.errors import ErrorCode
from domain.events import (
    PaymentResult,
    RefundResult,
    capture_event_id,
    conflict_event_id,
    refusal_before_the_field,
)
from domain.refunds import RefundStatus
from domain.status import PaymentStatus
from domain.webhook_events import payment_webhook, refund_webhook
from schemas.payments import payment_result_to_record
from schemas.refunds import refund_result_to_record
from tests.support.result_events import (
    MESSAGES,
    older_schema,
    payment_result,
    refund_result,
    written_with,
)

pytestmark = pytest.mark.unit

PAYMENT_ID = "pay_" + "c" * 32
REFUND_ID = "ref_" + "d" * 32
CONFLICT = ErrorInfo(ErrorCode.IDEMPOTENCY_CONFLICT, "this idempotency key was already used")
AT = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def _payment_refusal() -> PaymentResult:
    return dataclasses.replace(
        payment_result(PAYMENT_ID, PaymentStatus.FAILED),
        event_id=conflict_event_id(PAYMENT_ID, "f" * 64),
        error=CONFLICT,
        provider=None,
        provider_reference=None,
        refusal=True,
    )


def _refund_refusal() -> RefundResult:
    return dataclasses.replace(
        refund_result(REFUND_ID, RefundStatus.FAILED),
        event_id=conflict_event_id(REFUND_ID, "f" * 64),
        error=CONFLICT,
        payment_status=None,
        payment_refunded_minor=None,
        provider=None,
        provider_reference=None,
        refusal=True,
    )


def _schema_id(data: bytes) -> int:
    schema_id: int = struct.unpack(">I", data[1:5])[0]
    return schema_id


@pytest.mark.parametrize("refusal", [True, False])
def test_a_payment_result_round_trips_with_its_refusal_flag_under_id_17(refusal: bool) -> None:
    event = dataclasses.replace(_payment_refusal(), refusal=refusal)
    data = MESSAGES.encode_result(event)
    assert _schema_id(data) == 17
    assert MESSAGES.decode_result(data) == event
    assert MESSAGES.decode_any_result(data) == event


@pytest.mark.parametrize("refusal", [True, False])
def test_a_refund_result_round_trips_with_its_refusal_flag_under_id_18(refusal: bool) -> None:
    event = dataclasses.replace(_refund_refusal(), refusal=refusal)
    data = MESSAGES.encode_refund_result(event)
    assert _schema_id(data) == 18
    assert MESSAGES.decode_any_result(data) == event


def test_an_ordinary_event_is_written_with_refusal_false() -> None:
    assert payment_result_to_record(payment_result(PAYMENT_ID))["refusal"] is False
    assert refund_result_to_record(refund_result(REFUND_ID))["refusal"] is False


def test_readers_on_older_versions_read_the_new_events_without_the_field() -> None:
    payment = MESSAGES.encode_result(_payment_refusal())
    v4 = older_schema("payment_result.v4.avsc")
    for old_file in ("payment_result.v1.avsc", "payment_result.v2.avsc", "payment_result.v3.avsc"):
        old = fastavro.schemaless_reader(io.BytesIO(payment[5:]), v4, older_schema(old_file))
        assert isinstance(old, dict)
        assert (old["status"], old["error"]["code"]) == ("failed", "idempotency_conflict")
        assert "refusal" not in old
    refund = MESSAGES.encode_refund_result(_refund_refusal())
    old = fastavro.schemaless_reader(
        io.BytesIO(refund[5:]),
        older_schema("refund_result.v2.avsc"),
        older_schema("refund_result.v1.avsc"),
    )
    assert isinstance(old, dict)
    assert (old["refundId"], old["status"], "refusal" in old) == (REFUND_ID, "failed", False)


@pytest.mark.parametrize(
    ("schema_id", "file_name"),
    [(2, "payment_result.v1.avsc"), (12, "payment_result.v2.avsc"), (16, "payment_result.v3.avsc")],
)
def test_a_payment_refusal_written_before_the_field_reads_as_one(
    schema_id: int, file_name: str
) -> None:
    refusal = _payment_refusal()
    data = written_with(schema_id, file_name, payment_result_to_record(refusal))
    assert MESSAGES.decode_result(data) == refusal
    # A payment that itself failed with that code (a provider refusing a reused key) did
    # change: its event, under the payment's own failed event id, is no refusal.
    failed = dataclasses.replace(
        payment_result(PAYMENT_ID, PaymentStatus.FAILED), error=CONFLICT, refusal=False
    )
    data = written_with(schema_id, file_name, payment_result_to_record(failed))
    assert MESSAGES.decode_any_result(data) == failed


def test_a_refund_refusal_written_before_the_field_reads_as_one() -> None:
    refusal = _refund_refusal()
    data = written_with(5, "refund_result.v1.avsc", refund_result_to_record(refusal))
    assert MESSAGES.decode_any_result(data) == refusal
    failed = dataclasses.replace(
        refund_result(REFUND_ID, RefundStatus.FAILED), error=CONFLICT, refusal=False
    )
    data = written_with(5, "refund_result.v1.avsc", refund_result_to_record(failed))
    assert MESSAGES.decode_any_result(data) == failed


def test_the_field_of_a_new_event_is_taken_as_written() -> None:
    """Since v4 the writer says it: the rule for older events is not applied on top."""
    unflagged = dataclasses.replace(_payment_refusal(), refusal=False)
    assert MESSAGES.decode_result(MESSAGES.encode_result(unflagged)).refusal is False


def test_a_refused_capture_reports_the_payment_as_it_stands_and_is_no_refusal() -> None:
    """A capture refused with idempotency_conflict (another amount than the capture made)
    carries the payment's own status: readers keep applying it."""
    captured = dataclasses.replace(
        payment_result(PAYMENT_ID, PaymentStatus.SUCCEEDED),
        event_id=capture_event_id(PAYMENT_ID, "refused", AT),
        error=CONFLICT,
    )
    assert refusal_before_the_field(captured) is False


def test_webhooks_skip_refusals_and_keep_failures_with_the_same_error_code() -> None:
    assert payment_webhook(_payment_refusal()) is None
    assert refund_webhook(_refund_refusal()) is None
    failed = dataclasses.replace(_payment_refusal(), refusal=False)
    webhook = payment_webhook(failed)
    assert webhook is not None
    assert webhook.type == "payment.failed"
    refund_failed = refund_webhook(dataclasses.replace(_refund_refusal(), refusal=False))
    assert refund_failed is not None
    assert refund_failed.type == "refund.failed"
