"""Sandbox refunds, authorize/capture and charge by reference: acquirer, ledgers, shapes."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from domain.accounts import Account, AccountType
from domain.errors import ErrorCode, PaygateError
from domain.money import Money
from domain.payments import PaymentMethod
from domain.refunds import RefundReason
from providers.errors import ProviderTimeoutError
from providers.port import (
    CaptureRequest,
    ChargeRequest,
    ChargeStatus,
    ProviderRefundStatus,
    RefundRequest,
)
from providers.sandbox import (
    InProcessSandboxProvider,
    MemoryLedger,
    SandboxAcquirer,
    SandboxConfig,
    SandboxRefundErrorCode,
    SandboxRefundStatus,
    SandboxRequestRejectedError,
    SqliteLedger,
    adapter,
    transformers,
)
from providers.sandbox.refund_wire import parse_capture_body, parse_refund_body, refund_json
from tests.support.builders import (
    DECLINED_CARD,
    REFUNDS_FAIL_CARD,
    REFUNDS_PENDING_CARD,
    SUCCESS_CARD,
)

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def charge_request(payer: str = SUCCESS_CARD, *, amount: int = 1000, capture: bool = True):
    return ChargeRequest(
        attempt_key=f"att-{uuid.uuid4().hex}",
        payment_request_id=f"pay_{uuid.uuid4().hex}",
        amount=Money(amount, "EUR"),
        payment_method=PaymentMethod.CARD,
        payer=Account(AccountType.CARD, payer),
        payee=Account(AccountType.BANK_ACCOUNT, "DE0012345678"),
        capture=capture,
    )


def refund_request(
    charge_reference: str,
    amount: int = 400,
    *,
    key: str | None = None,
    currency: str = "EUR",
    reason: RefundReason | None = RefundReason.REQUESTED_BY_CUSTOMER,
) -> RefundRequest:
    return RefundRequest(
        refund_key=key or f"rk-{uuid.uuid4().hex}",
        refund_id=f"ref_{uuid.uuid4().hex}",
        payment_request_id="pay_1",
        charge_reference=charge_reference,
        amount=Money(amount, currency),
        reason=reason,
    )


def capture_request(charge_reference: str, amount: int, *, key: str = "cap-1", currency="EUR"):
    return CaptureRequest(
        capture_key=key,
        payment_request_id="pay_1",
        charge_reference=charge_reference,
        amount=Money(amount, currency),
    )


@pytest.fixture(params=["memory", "sqlite"])
async def sandbox(request, tmp_path):
    """The in-process provider over each ledger, with a clock the test moves."""
    ledger = MemoryLedger() if request.param == "memory" else SqliteLedger(str(tmp_path / "l.db"))
    clock = Clock()
    acquirer = SandboxAcquirer(ledger, SandboxConfig(refund_settle_s=5.0), clock=clock)
    provider = InProcessSandboxProvider(acquirer, call_timeout_s=5.0)
    async with provider:
        provider.clock = clock  # type: ignore[attr-defined]
        yield provider


def summary(outcome):
    """An outcome's fields; PaygateError compares by identity, so compare its attributes."""
    error = outcome.error
    return (
        outcome.status,
        outcome.provider_reference,
        None if error is None else (error.code, error.message, error.decline_code),
    )


async def charged(sandbox, payer: str = SUCCESS_CARD, amount: int = 1000) -> str:
    outcome = await sandbox.charge(charge_request(payer, amount=amount))
    assert outcome.provider_reference is not None
    return outcome.provider_reference


# -- refunds ----------------------------------------------------------------------------------


async def test_a_refund_succeeds_at_once_and_is_its_own_ledger_row(sandbox):
    charge = await charged(sandbox)
    request = refund_request(charge, 400)
    outcome = await sandbox.refund(request)
    assert outcome.status is ProviderRefundStatus.SUCCEEDED
    assert outcome.provider_reference is not None
    assert outcome.provider_reference.startswith("re_")
    assert outcome.error is None
    (row,) = await sandbox.acquirer.refunds()
    assert (row.idempotency_key, row.charge_id, row.amount_minor, row.currency) == (
        request.refund_key,
        charge,
        400,
        "EUR",
    )
    assert row.reason is RefundReason.REQUESTED_BY_CUSTOMER
    assert row.refund_reference == request.refund_id
    known = await sandbox.refund_status(request.refund_key, charge)
    assert known == outcome


async def test_same_refund_key_same_parameters_replays(sandbox):
    charge = await charged(sandbox)
    request = refund_request(charge, 1000)
    first = await sandbox.refund(request)
    again = await sandbox.refund(request)
    assert again == first
    assert len(await sandbox.acquirer.refunds()) == 1


async def test_same_refund_key_other_parameters_is_a_conflict(sandbox):
    charge = await charged(sandbox)
    await sandbox.refund(refund_request(charge, 300, key="rk-1"))
    with pytest.raises(PaygateError) as caught:
        await sandbox.refund(refund_request(charge, 301, key="rk-1"))
    assert caught.value.code is ErrorCode.IDEMPOTENCY_CONFLICT


async def test_refunds_add_up_to_the_captured_amount_and_no_further(sandbox):
    charge = await charged(sandbox, amount=1000)
    assert (await sandbox.refund(refund_request(charge, 600))).status is (
        ProviderRefundStatus.SUCCEEDED
    )
    with pytest.raises(PaygateError) as caught:
        await sandbox.refund(refund_request(charge, 401))
    assert caught.value.code is ErrorCode.REFUND_EXCEEDS_CAPTURED
    assert caught.value.param == "amountMinor"
    assert (await sandbox.refund(refund_request(charge, 400))).status is (
        ProviderRefundStatus.SUCCEEDED
    )
    assert [row.amount_minor for row in await sandbox.acquirer.refunds()] == [600, 400]


async def test_concurrent_refunds_never_exceed_the_captured_amount(sandbox):
    charge = await charged(sandbox, amount=1000)
    results = await asyncio.gather(
        *(sandbox.refund(refund_request(charge, 300)) for _ in range(6)),
        return_exceptions=True,
    )
    accepted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, PaygateError)]
    assert len(accepted) == 3
    assert len(refused) == 3
    assert {e.code for e in refused} == {ErrorCode.REFUND_EXCEEDS_CAPTURED}
    assert sum(row.amount_minor for row in await sandbox.acquirer.refunds()) == 900


async def test_a_refund_in_another_currency_is_refused(sandbox):
    charge = await charged(sandbox)
    with pytest.raises(PaygateError) as caught:
        await sandbox.refund(refund_request(charge, 100, currency="USD"))
    assert (caught.value.code, caught.value.param) == (ErrorCode.CURRENCY_MISMATCH, "currency")
    assert await sandbox.acquirer.refunds() == []


async def test_unknown_declined_and_uncaptured_charges_are_not_refundable(sandbox):
    declined = await charged(sandbox, DECLINED_CARD)
    authorized = (await sandbox.charge(charge_request(capture=False))).provider_reference
    for charge in ("ch_unknown", declined, authorized):
        with pytest.raises(PaygateError) as caught:
            await sandbox.refund(refund_request(charge, 100))
        assert caught.value.code is ErrorCode.PAYMENT_NOT_REFUNDABLE, charge
        assert caught.value.param == "chargeId"
    assert await sandbox.acquirer.refunds() == []


async def test_a_refused_refund_records_nothing_so_its_key_can_be_used_later(sandbox):
    charge = await charged(sandbox, amount=500)
    with pytest.raises(PaygateError):
        await sandbox.refund(refund_request(charge, 600, key="rk-x", currency="USD"))
    assert await sandbox.refund_status("rk-x", charge) is None
    ok = await sandbox.refund(refund_request(charge, 500, key="rk-x"))
    assert ok.status is ProviderRefundStatus.SUCCEEDED


async def test_refunds_of_the_pending_number_settle_after_refund_settle_s(sandbox):
    charge = await charged(sandbox, REFUNDS_PENDING_CARD)
    request = refund_request(charge, 1000)
    first = await sandbox.refund(request)
    assert first.status is ProviderRefundStatus.PENDING
    assert first.error is None
    # Pending holds its amount against the charge.
    with pytest.raises(PaygateError) as caught:
        await sandbox.refund(refund_request(charge, 1))
    assert caught.value.code is ErrorCode.REFUND_EXCEEDS_CAPTURED
    sandbox.clock.now += timedelta(seconds=4.9)
    still = await sandbox.refund_status(request.refund_key, charge)
    assert still is not None
    assert still.status is ProviderRefundStatus.PENDING
    sandbox.clock.now += timedelta(seconds=0.1)
    settled = await sandbox.refund_status(request.refund_key, charge)
    assert settled is not None
    assert settled.status is ProviderRefundStatus.SUCCEEDED
    assert settled.provider_reference == first.provider_reference
    (row,) = await sandbox.acquirer.ledger.refunds()
    assert row.status is SandboxRefundStatus.SUCCEEDED  # recorded, not only shown
    assert (await sandbox.refund(request)).status is ProviderRefundStatus.SUCCEEDED


async def test_refunds_of_the_failing_number_fail_with_a_reason(sandbox):
    charge = await charged(sandbox, REFUNDS_FAIL_CARD)
    request = refund_request(charge, 1000)
    outcome = await sandbox.refund(request)
    assert outcome.status is ProviderRefundStatus.FAILED
    assert outcome.provider_reference is not None
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.REFUND_FAILED
    assert outcome.error.decline_code == "refund_declined"
    assert outcome.error.message
    assert summary(await sandbox.refund_status(request.refund_key, charge)) == summary(outcome)
    # A failed refund returned nothing, so the whole amount is still refundable.
    (row,) = await sandbox.acquirer.refunds()
    assert row.error_code is SandboxRefundErrorCode.REFUND_DECLINED
    again = await sandbox.refund(refund_request(charge, 1000))
    assert again.status is ProviderRefundStatus.FAILED


async def test_refund_status_of_an_unknown_key_is_none(sandbox):
    assert await sandbox.refund_status("rk-never", "ch_x") is None


# -- authorize and capture --------------------------------------------------------------------


async def test_authorize_then_partial_capture_then_refund_up_to_the_capture(sandbox):
    outcome = await sandbox.charge(charge_request(amount=1000, capture=False))
    assert outcome.status is ChargeStatus.AUTHORIZED
    charge = outcome.provider_reference
    assert (await sandbox.acquirer.stats()).authorized == 1
    captured = await sandbox.capture(capture_request(charge, 700))
    assert captured.status is ChargeStatus.SUCCEEDED
    assert captured.provider_reference == charge
    row = await sandbox.acquirer.charge_by_id(charge)
    assert (row.captured_minor, row.capture_key) == (700, "cap-1")
    with pytest.raises(PaygateError) as caught:
        await sandbox.refund(refund_request(charge, 701))
    assert caught.value.code is ErrorCode.REFUND_EXCEEDS_CAPTURED
    assert (await sandbox.refund(refund_request(charge, 700))).status is (
        ProviderRefundStatus.SUCCEEDED
    )


async def test_capture_is_idempotent_per_capture_key(sandbox):
    charge = (await sandbox.charge(charge_request(capture=False))).provider_reference
    first = await sandbox.capture(capture_request(charge, 1000, key="cap-a"))
    assert await sandbox.capture(capture_request(charge, 1000, key="cap-a")) == first
    with pytest.raises(PaygateError) as conflict:
        await sandbox.capture(capture_request(charge, 900, key="cap-a"))
    assert conflict.value.code is ErrorCode.IDEMPOTENCY_CONFLICT
    with pytest.raises(PaygateError) as again:
        await sandbox.capture(capture_request(charge, 1000, key="cap-b"))
    assert (again.value.code, again.value.param) == (ErrorCode.INVALID_REQUEST, "chargeId")


async def test_concurrent_captures_with_two_keys_capture_once(sandbox):
    charge = (await sandbox.charge(charge_request(capture=False))).provider_reference
    results = await asyncio.gather(
        *(sandbox.capture(capture_request(charge, 500, key=f"cap-{i}")) for i in range(4)),
        return_exceptions=True,
    )
    assert sum(1 for r in results if not isinstance(r, BaseException)) == 1
    assert all(r.code is ErrorCode.INVALID_REQUEST for r in results if isinstance(r, PaygateError))


@pytest.mark.parametrize(
    ("amount", "currency", "code", "param"),
    [
        (1001, "EUR", ErrorCode.INVALID_AMOUNT, "amountMinor"),
        (100, "USD", ErrorCode.CURRENCY_MISMATCH, "currency"),
    ],
)
async def test_captures_above_the_authorization_or_in_another_currency_are_refused(
    sandbox, amount, currency, code, param
):
    charge = (await sandbox.charge(charge_request(capture=False))).provider_reference
    with pytest.raises(PaygateError) as caught:
        await sandbox.capture(capture_request(charge, amount, currency=currency))
    assert (caught.value.code, caught.value.param) == (code, param)
    assert (await sandbox.charge_by_reference(charge)).status is ChargeStatus.AUTHORIZED


async def test_captured_declined_and_unknown_charges_cannot_be_captured(sandbox):
    captured = await charged(sandbox)
    declined = await charged(sandbox, DECLINED_CARD)
    for charge, code in (
        (captured, ErrorCode.INVALID_REQUEST),
        (declined, ErrorCode.INVALID_REQUEST),
        ("ch_unknown", ErrorCode.NOT_FOUND),
    ):
        with pytest.raises(PaygateError) as caught:
            await sandbox.capture(capture_request(charge, 100))
        assert caught.value.code is code, charge


async def test_an_authorize_only_request_is_not_a_replay_of_a_captured_one(sandbox):
    request = charge_request()
    await sandbox.charge(request)
    authorize = dataclasses.replace(request, capture=False)
    with pytest.raises(PaygateError) as caught:
        await sandbox.charge(authorize)
    assert caught.value.code is ErrorCode.IDEMPOTENCY_CONFLICT


# -- charge by reference ----------------------------------------------------------------------


async def test_charge_by_reference(sandbox):
    outcome = await sandbox.charge(charge_request(DECLINED_CARD))
    found = await sandbox.charge_by_reference(outcome.provider_reference)
    assert summary(found) == summary(outcome)
    assert found.error.code is ErrorCode.PAYMENT_DECLINED
    assert await sandbox.charge_by_reference("ch_unknown") is None


# -- SQLite: an older ledger file gains the new columns ----------------------------------------


async def test_an_older_sqlite_ledger_is_upgraded_on_open(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute(
        """CREATE TABLE charges (idempotency_key TEXT PRIMARY KEY, charge_id TEXT NOT NULL UNIQUE,
        request_hash TEXT NOT NULL, payment_reference TEXT NOT NULL, amount_minor INTEGER NOT
        NULL, currency TEXT NOT NULL, payer_masked TEXT NOT NULL, status TEXT NOT NULL,
        error_code TEXT, decline_code TEXT, created_at TEXT NOT NULL)"""
    )
    db.execute(
        "INSERT INTO charges VALUES ('k1', 'ch_old', 'h', 'pay_1', 900, 'EUR', '****4242',"
        " 'succeeded', NULL, NULL, '2025-01-01T00:00:00+00:00')"
    )
    db.commit()
    db.close()
    provider = InProcessSandboxProvider(SandboxAcquirer(SqliteLedger(str(path))))
    async with provider:
        row = await provider.acquirer.charge_by_id("ch_old")
        assert row is not None
        assert row.captured_minor == 900
        outcome = await provider.refund(refund_request("ch_old", 900))
        assert outcome.status is ProviderRefundStatus.SUCCEEDED


# -- shapes and maps ----------------------------------------------------------------------------


def test_refund_status_and_error_maps_are_exhaustive():
    assert set(transformers.REFUND_STATUSES) == set(SandboxRefundStatus)
    for sandbox_status, ours in transformers.REFUND_STATUSES.items():
        assert ours.value == sandbox_status.value
    assert set(transformers.REFUND_ERROR_CODES) == set(SandboxRefundErrorCode)
    assert set(transformers.REFUND_ERROR_CODES.values()) == {ErrorCode.REFUND_FAILED}
    for code in ("brand_new", "", None):
        assert transformers.refund_error_code_from_sandbox(code) is ErrorCode.REFUND_FAILED


@pytest.mark.parametrize("reason", [*RefundReason, None])
def test_refund_body_round_trips_through_the_service_parser(reason):
    request = refund_request("ch_1", 250, reason=reason)
    assert parse_refund_body(transformers.refund_body(request)) == transformers.refund_params(
        request
    )


def test_capture_body_round_trips_through_the_service_parser():
    request = capture_request("ch_1", 250)
    assert parse_capture_body("ch_1", transformers.capture_body(request)) == (
        transformers.capture_params(request)
    )


@pytest.mark.parametrize(
    ("changes", "code", "param"),
    [
        ({"reason": "because"}, ErrorCode.INVALID_REQUEST, "reason"),
        ({"chargeId": ""}, ErrorCode.INVALID_REQUEST, "chargeId"),
        ({"refundReference": None}, ErrorCode.INVALID_REQUEST, "refundReference"),
        ({"amountMinor": -1}, ErrorCode.INVALID_AMOUNT, "amountMinor"),
        ({"extra": 1}, ErrorCode.INVALID_REQUEST, "body"),
    ],
)
def test_bad_refund_bodies_name_the_field(changes, code, param):
    body = {**transformers.refund_body(refund_request("ch_1")), **changes}
    with pytest.raises(PaygateError) as caught:
        parse_refund_body(body)
    assert (caught.value.code, caught.value.param) == (code, param)


async def test_refund_answers_round_trip_to_the_same_outcome(sandbox):
    for payer in (SUCCESS_CARD, REFUNDS_PENDING_CARD, REFUNDS_FAIL_CARD):
        charge = await charged(sandbox, payer)
        await sandbox.refund(refund_request(charge, 100))
    for row in await sandbox.acquirer.refunds():
        from_http = transformers.refund_outcome_from_body(refund_json(row))
        from_record = transformers.refund_outcome_from_record(row)
        assert (from_http.status, from_http.provider_reference) == (
            from_record.status,
            from_record.provider_reference,
        )
        assert (from_http.error is None) == (from_record.error is None)
        if from_http.error is not None and from_record.error is not None:
            assert from_http.error.code is from_record.error.code is ErrorCode.REFUND_FAILED
            assert from_http.error.decline_code == from_record.error.decline_code


@pytest.mark.parametrize(
    "body",
    [None, {"status": "succeeded"}, {"id": "re_1", "status": "refunded"}, {"id": "re_1"}],
)
def test_unexpected_refund_shapes_are_refused(body):
    with pytest.raises(ValueError):  # noqa: PT011
        transformers.refund_outcome_from_body(body)


def test_adapter_translates_422_refusals_to_catalogue_errors():
    refusal = {"error": {"code": "refund_exceeds_captured", "message": "too much", "param": "x"}}
    with pytest.raises(PaygateError) as caught:
        adapter._raise_for_status(422, {}, refusal)
    assert (caught.value.code, caught.value.message, caught.value.param) == (
        ErrorCode.REFUND_EXCEEDS_CAPTURED,
        "too much",
        "x",
    )
    with pytest.raises(SandboxRequestRejectedError):
        adapter._raise_for_status(422, {}, {"error": {"code": "who_knows"}})


async def test_http_provider_refund_calls_need_start():
    http = adapter.SandboxHttpProvider("http://127.0.0.1:9")
    with pytest.raises(RuntimeError, match="start"):
        await http.refund(refund_request("ch_1"))
    with pytest.raises(RuntimeError, match="start"):
        await http.refund_status("rk", "ch_1")


async def test_in_process_refund_times_out_like_the_adapter():
    acquirer = SandboxAcquirer(MemoryLedger(), SandboxConfig(latency_ms=200))
    provider = InProcessSandboxProvider(acquirer, call_timeout_s=0.05)
    with pytest.raises(ProviderTimeoutError):
        await provider.refund(refund_request("ch_1"))
