"""Every kind of bad record on the results topic is skipped: counted once, logged once, survived."""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from domain.error_info import ErrorInfo
from domain.errors import ErrorCode
from domain.events import conflict_event_id
from domain.next_action import NextAction, NextActionType
from domain.refunds import RefundStatus
from domain.status import PaymentStatus
from http_facade.result_events import PaymentEvents, ResultRecord, SkipReason
from schemas.payments import payment_result_to_record
from telemetry.metrics import Metrics
from tests.support.result_events import (
    MESSAGES,
    command_bytes,
    encoded_payment_result,
    payment_result,
    refund_result,
    truncated_payment_result,
    unknown_schema_id_bytes,
    written_with,
)

pytestmark = pytest.mark.unit

PAYMENT_ID = "pay_" + "a" * 32
REFUND_ID = "ref_" + "b" * 32
GOOD = MESSAGES.encode_result(payment_result(PAYMENT_ID))


class Recorder:
    def __init__(self) -> None:
        self.finals: list[str] = []
        self.refusals: list[tuple[str, str]] = []

    def __call__(self, waited_id: str) -> None:
        self.finals.append(waited_id)

    def refused(self, waited_id: str, event_id: str) -> None:
        self.refusals.append((waited_id, event_id))


class RaisingDecoder:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def decode_any_result(self, data: bytes):
        raise self.error


def _events(decoder=MESSAGES, on_final=None) -> tuple[PaymentEvents, Metrics, Recorder]:
    metrics = Metrics(CollectorRegistry())
    recorder = Recorder()
    events = PaymentEvents(
        decoder=decoder, on_final=on_final or recorder, on_refusal=recorder.refused, metrics=metrics
    )
    return events, metrics, recorder


def _errors(metrics: Metrics) -> dict[str, float]:
    return {
        reason.value: metrics.registry.get_sample_value(
            "paygate_result_listener_errors_total", {"reason": reason.value}
        )
        or 0.0
        for reason in SkipReason
    }


def _record(value: bytes | None, offset: int = 7) -> ResultRecord:
    return ResultRecord(value=value, partition=0, offset=offset)


def _assert_skipped_once(metrics, caplog, reason: SkipReason) -> None:
    assert _errors(metrics) == {r.value: (1.0 if r is reason else 0.0) for r in SkipReason}
    warnings = [r for r in caplog.records if r.name == "paygate.http.results"]
    assert len(warnings) == 1
    (warning,) = warnings
    assert warning.levelno == logging.WARNING
    assert warning.exc_info is None  # no stack trace per bad record
    assert (warning.reason, warning.partition, warning.offset) == (reason.value, 0, 7)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        pytest.param(b"definitely not avro", SkipReason.UNDECODABLE, id="garbage-bytes"),
        pytest.param(b"", SkipReason.UNDECODABLE, id="empty"),
        pytest.param(None, SkipReason.UNDECODABLE, id="tombstone"),
        pytest.param(unknown_schema_id_bytes(), SkipReason.UNDECODABLE, id="unknown-schema-id"),
        pytest.param(command_bytes(), SkipReason.UNDECODABLE, id="a-command-not-a-result"),
        pytest.param(truncated_payment_result(), SkipReason.UNDECODABLE, id="truncated-body"),
        pytest.param(
            encoded_payment_result(PAYMENT_ID, currency="ZZZ"),
            SkipReason.INVALID,
            id="currency-ZZZ",
        ),
        pytest.param(
            encoded_payment_result(PAYMENT_ID, status="teleported"),
            SkipReason.INVALID,
            id="unknown-status",
        ),
        pytest.param(
            encoded_payment_result(
                PAYMENT_ID,
                status="failed",
                error={
                    "code": "no_such_code",
                    "message": "m",
                    "category": "c",
                    "retryable": False,
                    "param": None,
                    "declineCode": None,
                },
            ),
            SkipReason.INVALID,
            id="unknown-error-code",
        ),
    ],
)
def test_a_bad_record_is_skipped_and_the_next_good_one_still_wakes(value, reason, caplog) -> None:
    events, metrics, recorder = _events()
    with caplog.at_level(logging.WARNING):
        events.handle(_record(value))
    _assert_skipped_once(metrics, caplog, reason)
    assert recorder.finals == []

    events.handle(_record(GOOD, offset=8))
    assert recorder.finals == [PAYMENT_ID]


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        pytest.param(KeyError("currency"), SkipReason.INVALID, id="missing-field"),
        pytest.param(TypeError("None is not a Decimal"), SkipReason.INVALID, id="missing-value"),
        pytest.param(ValueError("bad"), SkipReason.INVALID, id="bad-value"),
        pytest.param(RuntimeError("a bug"), SkipReason.UNEXPECTED, id="anything-else"),
    ],
)
def test_any_exception_from_decoding_is_skipped(error, reason, caplog) -> None:
    events, metrics, recorder = _events(decoder=RaisingDecoder(error))
    with caplog.at_level(logging.WARNING):
        events.handle(_record(b"whatever"))
    _assert_skipped_once(metrics, caplog, reason)
    assert recorder.finals == []


def test_a_failing_waiter_callback_is_skipped_as_unexpected(caplog) -> None:
    calls: list[str] = []

    def explode(waited_id: str) -> None:
        calls.append(waited_id)
        if len(calls) == 1:
            raise RuntimeError("waiter broke")

    events, metrics, _ = _events(on_final=explode)
    with caplog.at_level(logging.WARNING):
        events.handle(_record(GOOD))
    _assert_skipped_once(metrics, caplog, SkipReason.UNEXPECTED)

    events.handle(_record(GOOD, offset=8))
    assert calls == [PAYMENT_ID, PAYMENT_ID]


def test_the_log_line_holds_the_catalogue_message_and_code_not_the_record(caplog) -> None:
    events, _, _ = _events()
    with caplog.at_level(logging.WARNING):
        events.handle(_record(encoded_payment_result(PAYMENT_ID, currency="ZZZ")))
    (warning,) = caplog.records
    assert warning.error == "unsupported_currency"
    assert PAYMENT_ID not in warning.getMessage()


def test_final_results_wake_by_payment_or_refund_id_and_others_are_ignored(caplog) -> None:
    events, metrics, recorder = _events()
    with caplog.at_level(logging.WARNING):
        events.handle(_record(MESSAGES.encode_result(payment_result(PAYMENT_ID))))
        events.handle(_record(MESSAGES.encode_refund_result(refund_result(REFUND_ID))))
        pending = payment_result("pay_" + "c" * 32, PaymentStatus.PENDING)
        events.handle(_record(MESSAGES.encode_result(pending)))
        processing = refund_result("ref_" + "d" * 32, RefundStatus.PROCESSING)
        events.handle(_record(MESSAGES.encode_refund_result(processing)))
    assert recorder.finals == [PAYMENT_ID, REFUND_ID]
    assert _errors(metrics) == dict.fromkeys((r.value for r in SkipReason), 0.0)
    assert caplog.records == []


def test_a_payment_needing_its_payer_wakes_its_waiters_and_a_pending_one_does_not():
    events, _metrics, recorder = _events()
    waiting = dataclasses.replace(
        payment_result(PAYMENT_ID, PaymentStatus.REQUIRES_ACTION),
        next_action=NextAction.of(
            NextActionType.REDIRECT_URL,
            "https://sandbox.example/v1/actions/ch_1",
            datetime(2026, 1, 1, tzinfo=UTC),
        ),
    )
    events.handle(_record(MESSAGES.encode_result(payment_result("pay_x", PaymentStatus.PENDING))))
    events.handle(_record(MESSAGES.encode_result(waiting)))
    assert recorder.finals == [PAYMENT_ID]


def test_a_refusal_ends_no_wait_for_its_id_but_is_reported_by_its_event_id() -> None:
    """A refused command's answer (failed, under the existing payment's id) is no state of
    that payment: only the request it refused may be woken by it, by its event id. Old
    events without the field are told by the rule of their time; a payment that itself
    failed with the same error code is final like any failure."""
    events, _metrics, recorder = _events()
    conflict = ErrorInfo(ErrorCode.IDEMPOTENCY_CONFLICT, "reused")
    refusal = dataclasses.replace(
        payment_result(PAYMENT_ID, PaymentStatus.FAILED),
        event_id=conflict_event_id(PAYMENT_ID, "f" * 64),
        error=conflict,
        refusal=True,
    )
    refund_refusal = dataclasses.replace(
        refund_result(REFUND_ID, RefundStatus.FAILED),
        event_id=conflict_event_id(REFUND_ID, "f" * 64),
        error=conflict,
        refusal=True,
    )
    failed_at_provider = dataclasses.replace(
        payment_result(PAYMENT_ID, PaymentStatus.FAILED), error=conflict
    )
    events.handle(_record(MESSAGES.encode_result(refusal)))
    events.handle(_record(MESSAGES.encode_refund_result(refund_refusal)))
    v3 = written_with(16, "payment_result.v3.avsc", payment_result_to_record(refusal))
    events.handle(_record(v3))
    events.handle(_record(MESSAGES.encode_result(failed_at_provider)))
    assert recorder.refusals == [
        (PAYMENT_ID, refusal.event_id),
        (REFUND_ID, refund_refusal.event_id),
        (PAYMENT_ID, refusal.event_id),
    ]
    assert recorder.finals == [PAYMENT_ID]
