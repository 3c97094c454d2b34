"""The sandbox acquirer in process: behaviours, idempotency, faults, ledger, shapes, docs."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from domain.accounts import Account, AccountType
from domain.errors import CATALOGUE, ErrorCategory, ErrorCode, PaygateError
from domain.money import Money
from domain.payments import PaymentMethod
from providers.errors import (
    ProviderRateLimitedError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from providers.port import ChargeRequest, ChargeStatus
from providers.retry_after import MAX_RETRY_AFTER_S
from providers.sandbox import (
    DEFAULT_BEHAVIOUR,
    TEST_ACCOUNTS,
    AccountOutcome,
    Behaviour,
    ChargeRecord,
    InProcessSandboxProvider,
    MemoryLedger,
    RefundBehaviour,
    SandboxAcquirer,
    SandboxConfig,
    SandboxErrorCode,
    SandboxRequestRejectedError,
    SandboxStatus,
    Timing,
    adapter,
    behaviour_for,
    build_sandbox_app,
    transformers,
    wire,
)
from providers.sandbox.stats import summarize
from tests.support.builders import (
    DECLINED_CARD,
    INSUFFICIENT_FUNDS_CARD,
    INVALID_ACCOUNT_CARD,
    SLOW_CARD,
    SUCCESS_CARD,
    TIMEOUT_CARD,
    TIMEOUT_THEN_DECLINE_CARD,
    UNAVAILABLE_CARD,
    UNAVAILABLE_ONCE_CARD,
)

pytestmark = pytest.mark.unit

DOC = Path(__file__).resolve().parents[2] / "docs" / "sandbox.md"
PAYEE = "DE0012345678"

# Numbers whose 503 asks an absurd Retry-After, as the header says it.
RETRY_AFTER = {"4000000000000531": "inf", "4000000000000549": "1e12", "4000000000000556": "86400"}

# The brief's table, written out independently of the code's: (status, paygate code,
# decline code, timing). None as status means "5xx before processing". The only place tests
# type the numbers: everywhere else they come from tests.support.builders, derived from the
# code's table, which this one checks.
SPEC = {
    "4242424242424242": ("succeeded", None, None, Timing.IMMEDIATE),
    "4000000000003220": ("succeeded", None, None, Timing.IMMEDIATE),
    "4000000000000002": (
        "declined",
        ErrorCode.PAYMENT_DECLINED,
        "generic_decline",
        Timing.IMMEDIATE,
    ),
    "4000000000009995": (
        "declined",
        ErrorCode.INSUFFICIENT_FUNDS,
        "insufficient_funds",
        Timing.IMMEDIATE,
    ),
    "4000000000000069": (
        "declined",
        ErrorCode.INVALID_ACCOUNT,
        "invalid_account",
        Timing.IMMEDIATE,
    ),
    "4100000000000019": ("declined", ErrorCode.FRAUD_SUSPECTED, "fraudulent", Timing.IMMEDIATE),
    "4000000000000119": (None, None, None, Timing.IMMEDIATE),
    "4000000000000127": ("succeeded", None, None, Timing.IMMEDIATE),
    "4000000000000457": ("succeeded", None, None, Timing.IMMEDIATE),
    "4000000000000531": ("succeeded", None, None, Timing.IMMEDIATE),
    "4000000000000549": ("succeeded", None, None, Timing.IMMEDIATE),
    "4000000000000556": ("succeeded", None, None, Timing.IMMEDIATE),
    "4000000000007726": ("succeeded", None, None, Timing.IMMEDIATE),
    "4000000000005126": ("succeeded", None, None, Timing.IMMEDIATE),
    "4000000000000259": ("succeeded", None, None, Timing.SLOW),
    "4000000000000440": ("succeeded", None, None, Timing.IMMEDIATE),
    "4000000000000341": ("succeeded", None, None, Timing.HANG),
    "4000000000000200": ("declined", ErrorCode.PAYMENT_DECLINED, "generic_decline", Timing.HANG),
}

# Numbers whose first call per payment reference fails before processing.
FAILS_FIRST = {"4000000000000127", "4000000000000457", *RETRY_AFTER}
# Numbers that answer requires_action and wait for the payer.
PAYER_ACTION = {"4000000000003220"}
# Numbers that wait account_latency_s before deciding.
LATENCY = {"4000000000000440", "4000000000000457"}
# Numbers whose refunds do not simply succeed at once.
REFUNDS = {
    "4000000000007726": RefundBehaviour.SETTLE_LATER,
    "4000000000005126": RefundBehaviour.FAIL,
}

FAST = SandboxConfig(slow_delay_s=0.05, hang_s=0.5, account_latency_s=0.05)


def charge_request(
    payer: str = SUCCESS_CARD,
    *,
    key: str | None = None,
    amount: int = 1050,
    reference: str | None = None,
) -> ChargeRequest:
    return ChargeRequest(
        attempt_key=key or f"att-{uuid.uuid4().hex}",
        payment_request_id=reference or f"pay_{uuid.uuid4().hex}",
        amount=Money(amount, "EUR"),
        payment_method=PaymentMethod.CARD,
        payer=Account(AccountType.CARD, payer),
        payee=Account(AccountType.BANK_ACCOUNT, PAYEE),
    )


def provider(config: SandboxConfig = FAST, call_timeout_s: float = 0.1) -> InProcessSandboxProvider:
    return InProcessSandboxProvider(config=config, call_timeout_s=call_timeout_s)


def record(status: SandboxStatus = SandboxStatus.SUCCEEDED, **changes: object) -> ChargeRecord:
    declined = status is SandboxStatus.DECLINED
    fields: dict[str, object] = {
        "idempotency_key": f"att-{uuid.uuid4().hex}",
        "charge_id": f"ch_{uuid.uuid4().hex}",
        "request_hash": "0" * 64,
        "payment_reference": "pay_1",
        "amount_minor": 1050,
        "currency": "EUR",
        "payer_masked": "****4242",
        "status": status,
        "error_code": SandboxErrorCode.INSUFFICIENT_FUNDS if declined else None,
        "decline_code": "insufficient_funds" if declined else None,
        "created_at": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        "refunds": RefundBehaviour.SUCCEED,
        "captured_minor": 1050 if status is SandboxStatus.SUCCEEDED else 0,
        "action_expires_at": (
            datetime(2025, 1, 2, 3, 19, 5, tzinfo=UTC)
            if status is SandboxStatus.REQUIRES_ACTION
            else None
        ),
    }
    fields.update(changes)
    return ChargeRecord(**fields)  # type: ignore[arg-type]


# -- the test account table --------------------------------------------------------------


def test_code_table_matches_the_specification():
    assert set(TEST_ACCOUNTS) == set(SPEC)
    for number, (status, code, decline_code, timing) in SPEC.items():
        behaviour = TEST_ACCOUNTS[number]
        expected_outcome = AccountOutcome.UNAVAILABLE if status is None else AccountOutcome(status)
        assert behaviour.outcome is expected_outcome, number
        assert behaviour.unavailable_first is (number in FAILS_FIRST), number
        assert behaviour.refunds is REFUNDS.get(number, RefundBehaviour.SUCCEED), number
        assert behaviour.timing is timing, number
        assert behaviour.latency is (number in LATENCY), number
        assert behaviour.retry_after == RETRY_AFTER.get(number), number
        assert behaviour.decline_code == decline_code, number
        assert behaviour.payer_action is (number in PAYER_ACTION), number
        mapped = (
            None if behaviour.error_code is None else transformers.ERROR_CODES[behaviour.error_code]
        )
        assert mapped == code, number


def test_unlisted_numbers_succeed():
    assert behaviour_for("5555555555554444") is DEFAULT_BEHAVIOUR
    assert DEFAULT_BEHAVIOUR.outcome is AccountOutcome.SUCCEEDED
    assert DEFAULT_BEHAVIOUR.timing is Timing.IMMEDIATE


@pytest.mark.parametrize(
    "kwargs",
    [
        {"outcome": AccountOutcome.DECLINED},
        {"outcome": AccountOutcome.DECLINED, "error_code": SandboxErrorCode.CARD_DECLINED},
        {"outcome": AccountOutcome.SUCCEEDED, "decline_code": "generic_decline"},
        {"outcome": AccountOutcome.UNAVAILABLE, "timing": Timing.HANG},
        {
            "outcome": AccountOutcome.DECLINED,
            "error_code": SandboxErrorCode.CARD_DECLINED,
            "decline_code": "generic_decline",
            "unavailable_first": True,
        },
        {
            "outcome": AccountOutcome.UNAVAILABLE,
            "refunds": RefundBehaviour.FAIL,
        },
        {"outcome": AccountOutcome.SUCCEEDED, "timing": Timing.HANG, "latency": True},
        {"outcome": AccountOutcome.UNAVAILABLE, "latency": True},
        {"outcome": AccountOutcome.SUCCEEDED, "retry_after": "inf"},
        {"outcome": AccountOutcome.UNAVAILABLE, "retry_after": "in 5 minutes"},
        {"outcome": AccountOutcome.UNAVAILABLE, "retry_after": ""},
    ],
)
def test_inconsistent_behaviours_are_refused(kwargs):
    with pytest.raises(ValueError):  # noqa: PT011
        Behaviour("bad", **kwargs)


# -- every behaviour row, in process --------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    [
        n
        for n, spec in SPEC.items()
        if spec[0] and spec[3] is not Timing.HANG and n not in FAILS_FIRST | PAYER_ACTION
    ],
)
async def test_answered_behaviours(number):
    status, code, decline_code, _timing = SPEC[number]
    assert status is not None
    sandbox = provider()
    outcome = await sandbox.charge(charge_request(number))
    assert outcome.status is ChargeStatus(status)
    assert outcome.provider_reference is not None
    assert outcome.provider_reference.startswith("ch_")
    if code is None:
        assert outcome.error is None
    else:
        assert outcome.error is not None
        assert outcome.error.code is code
        assert outcome.error.decline_code == decline_code
        assert outcome.error.message
    assert len(await sandbox.acquirer.charges()) == 1


async def test_any_other_valid_number_succeeds():
    outcome = await provider().charge(charge_request("5555555555554444"))
    assert outcome.status is ChargeStatus.SUCCEEDED


async def test_slow_number_answers_after_the_slow_delay():
    started = time.monotonic()
    outcome = await provider(call_timeout_s=2.0).charge(charge_request(SLOW_CARD))
    assert outcome.status is ChargeStatus.SUCCEEDED
    # A little slack: the event loop may wake a timer up to its clock resolution early.
    assert time.monotonic() - started >= FAST.slow_delay_s * 0.9


async def test_provider_error_number_charges_nothing():
    sandbox = provider()
    request = charge_request(UNAVAILABLE_CARD)
    with pytest.raises(ProviderUnavailableError) as caught:
        await sandbox.charge(request)
    assert caught.value.retriable
    assert not caught.value.outcome_unknown
    assert await sandbox.acquirer.charges() == []
    assert await sandbox.charge_status(request.attempt_key) is None


async def test_fails_first_number_fails_once_per_payment_then_succeeds():
    sandbox = provider()
    first = charge_request(UNAVAILABLE_ONCE_CARD, key="pay_x-a1", reference="pay_x")
    with pytest.raises(ProviderUnavailableError) as caught:
        await sandbox.charge(first)
    assert caught.value.retriable
    assert not caught.value.outcome_unknown
    assert await sandbox.acquirer.charges() == []
    assert await sandbox.charge_status(first.attempt_key) is None
    # paygate's retry: same payment reference, a new attempt key.
    retry = charge_request(UNAVAILABLE_ONCE_CARD, key="pay_x-a2", reference="pay_x")
    outcome = await sandbox.charge(retry)
    assert outcome.status is ChargeStatus.SUCCEEDED
    # Another payment with the same number gets its own first failure.
    with pytest.raises(ProviderUnavailableError):
        await sandbox.charge(charge_request(UNAVAILABLE_ONCE_CARD, reference="pay_y"))
    rows = await sandbox.acquirer.charges()
    assert [(row.idempotency_key, row.status) for row in rows] == [
        ("pay_x-a2", SandboxStatus.SUCCEEDED)
    ]


async def test_fails_first_number_resending_the_same_key_succeeds_too():
    sandbox = provider()
    request = charge_request(UNAVAILABLE_ONCE_CARD)
    with pytest.raises(ProviderUnavailableError):
        await sandbox.charge(request)
    assert (await sandbox.charge(request)).status is ChargeStatus.SUCCEEDED


async def test_latency_number_records_nothing_while_it_waits():
    sandbox = provider(SandboxConfig(account_latency_s=0.3), call_timeout_s=2.0)
    request = charge_request("4000000000000440")
    call = asyncio.create_task(sandbox.charge(request))
    await asyncio.sleep(0)  # one step: the call runs to its latency wait
    assert sandbox.acquirer.in_flight() == [(request.attempt_key, request.payment_request_id)]
    assert await sandbox.charge_status(request.attempt_key) is None  # not decided yet
    assert (await call).status is ChargeStatus.SUCCEEDED
    assert sandbox.acquirer.in_flight() == []
    assert len(await sandbox.acquirer.charges()) == 1


async def test_latency_then_fails_once_fails_the_first_call_to_finish_its_wait():
    # Two attempts of one payment in flight at once (a duplicate without a key, a zombie
    # consumer): the one that started first fails, the other charges.
    sandbox = provider(SandboxConfig(account_latency_s=0.2), call_timeout_s=2.0)
    first = charge_request("4000000000000457", key="pay_z-a1", reference="pay_z")
    second = charge_request("4000000000000457", key="pay_z-a2", reference="pay_z")
    calls = asyncio.gather(sandbox.charge(first), sandbox.charge(second), return_exceptions=True)
    failed, charged = await calls
    assert isinstance(failed, ProviderUnavailableError)
    assert not isinstance(charged, BaseException)
    assert charged.status is ChargeStatus.SUCCEEDED
    rows = await sandbox.acquirer.charges()
    assert [row.idempotency_key for row in rows] == ["pay_z-a2"]


@pytest.mark.parametrize(("number", "header"), sorted(RETRY_AFTER.items()))
async def test_absurd_retry_after_numbers_fail_once_asking_it(number, header):
    sandbox = provider()
    first = charge_request(number, key="pay_r-a1", reference="pay_r")
    with pytest.raises(ProviderUnavailableError) as caught:
        await sandbox.charge(first)
    # Bounded where it enters paygate (providers.retry_after): asked, but never absurd.
    assert caught.value.retry_after == min(float(header), MAX_RETRY_AFTER_S)
    assert await sandbox.acquirer.charges() == []
    retry = charge_request(number, key="pay_r-a2", reference="pay_r")
    assert (await sandbox.charge(retry)).status is ChargeStatus.SUCCEEDED


async def test_an_injected_failure_asks_no_retry_after():
    sandbox = provider(SandboxConfig(failure_rate=1.0))
    with pytest.raises(ProviderUnavailableError) as caught:
        await sandbox.charge(charge_request("4000000000000531"))
    assert caught.value.retry_after is None


@pytest.mark.parametrize(
    ("number", "status", "code"),
    [
        (TIMEOUT_CARD, ChargeStatus.SUCCEEDED, None),
        (TIMEOUT_THEN_DECLINE_CARD, ChargeStatus.DECLINED, ErrorCode.PAYMENT_DECLINED),
    ],
)
async def test_hanging_numbers_time_out_but_are_recorded(number, status, code):
    sandbox = provider()
    request = charge_request(number)
    with pytest.raises(ProviderTimeoutError) as caught:
        await sandbox.charge(request)
    assert caught.value.outcome_unknown
    known = await sandbox.charge_status(request.attempt_key)
    assert known is not None
    assert known.status is status
    assert (known.error.code if known.error else None) is code
    # A retry with the same key replays at once instead of hanging again.
    replayed = await sandbox.charge(request)
    assert replayed.provider_reference == known.provider_reference
    assert len(await sandbox.acquirer.charges()) == 1


# -- idempotency ---------------------------------------------------------------------------


async def test_same_key_same_parameters_replays_without_charging_again():
    sandbox = provider()
    request = charge_request()
    first = await sandbox.charge(request)
    second = await sandbox.charge(request)
    assert second.provider_reference == first.provider_reference
    stats = await sandbox.acquirer.stats()
    assert (stats.charges, stats.succeeded, stats.max_charges_per_reference) == (1, 1, 1)


async def test_a_replayed_decline_is_the_same_decline():
    sandbox = provider()
    request = charge_request(INSUFFICIENT_FUNDS_CARD)
    first = await sandbox.charge(request)
    second = await sandbox.charge(request)
    assert second.provider_reference == first.provider_reference
    assert second.error is not None
    assert second.error.code is ErrorCode.INSUFFICIENT_FUNDS


@pytest.mark.parametrize(
    "changes",
    [{"amount": 999}, {"reference": "pay_other"}, {"payer": DECLINED_CARD}],
)
async def test_same_key_other_parameters_is_a_conflict(changes):
    sandbox = provider()
    request = charge_request(key="att-conflict", reference="pay_same")
    await sandbox.charge(request)
    other = charge_request(**{"key": "att-conflict", "reference": "pay_same", **changes})
    with pytest.raises(PaygateError) as caught:
        await sandbox.charge(other)
    assert caught.value.code is ErrorCode.IDEMPOTENCY_CONFLICT
    assert len(await sandbox.acquirer.charges()) == 1


async def test_concurrent_calls_with_one_key_charge_once():
    sandbox = provider(SandboxConfig(latency_ms=5, latency_jitter_ms=5, seed=3))
    request = charge_request()
    outcomes = await asyncio.gather(*(sandbox.charge(request) for _ in range(10)))
    assert len({o.provider_reference for o in outcomes}) == 1
    assert (await sandbox.acquirer.stats()).charges == 1


# -- fault injection -------------------------------------------------------------------------


async def test_failure_rate_one_always_fails_and_charges_nothing():
    sandbox = provider(SandboxConfig(failure_rate=1.0, seed=1))
    for _ in range(20):
        with pytest.raises(ProviderUnavailableError):
            await sandbox.charge(charge_request())
    assert await sandbox.acquirer.charges() == []


async def test_rates_zero_never_inject():
    sandbox = provider(SandboxConfig(failure_rate=0.0, timeout_rate=0.0, seed=1))
    for _ in range(50):
        assert (await sandbox.charge(charge_request())).status is ChargeStatus.SUCCEEDED
    assert (await sandbox.acquirer.stats()).succeeded == 50


async def test_timeout_rate_one_records_then_hangs():
    sandbox = provider(SandboxConfig(timeout_rate=1.0, hang_s=0.5, seed=1))
    request = charge_request(DECLINED_CARD)
    with pytest.raises(ProviderTimeoutError):
        await sandbox.charge(request)
    known = await sandbox.charge_status(request.attempt_key)
    assert known is not None
    assert known.status is ChargeStatus.DECLINED  # the number's outcome, answered late


async def test_injected_failure_wins_over_a_declining_number():
    sandbox = provider(SandboxConfig(failure_rate=1.0))
    with pytest.raises(ProviderUnavailableError):
        await sandbox.charge(charge_request(DECLINED_CARD))


async def _failure_pattern(seed: int) -> list[bool]:
    sandbox = provider(SandboxConfig(failure_rate=0.5, seed=seed))
    pattern = []
    for _ in range(40):
        try:
            await sandbox.charge(charge_request())
        except ProviderUnavailableError:
            pattern.append(True)
        else:
            pattern.append(False)
    return pattern


async def test_a_seed_makes_injected_faults_reproducible():
    first, again, other = (
        await _failure_pattern(7),
        await _failure_pattern(7),
        await _failure_pattern(8),
    )
    assert first == again
    assert first != other
    assert 0 < sum(first) < len(first)


async def test_latency_is_added_to_every_call():
    sandbox = provider(SandboxConfig(latency_ms=40), call_timeout_s=2.0)
    started = time.monotonic()
    await sandbox.charge(charge_request())
    assert time.monotonic() - started >= 0.04 * 0.9


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failure_rate": -0.01},
        {"failure_rate": 1.01},
        {"failure_rate": math.nan},
        {"timeout_rate": -1.0},
        {"timeout_rate": 2.0},
        {"latency_ms": -1.0},
        {"latency_jitter_ms": math.inf},
        {"slow_delay_s": -0.1},
        {"hang_s": math.nan},
        {"account_latency_s": -1.0},
        {"account_latency_s": math.inf},
    ],
)
def test_config_refuses_out_of_range_values(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        SandboxConfig(**kwargs)


def test_config_accepts_the_bounds():
    config = SandboxConfig(failure_rate=0.0, timeout_rate=1.0, latency_ms=0.0, seed=None)
    assert config.timeout_rate == 1.0


# -- the ledger never holds a clear number -----------------------------------------------------


async def test_ledger_rows_hold_the_payer_masked_only():
    sandbox = provider()
    numbers = [
        n
        for n, spec in SPEC.items()
        if spec[0] and spec[3] is Timing.IMMEDIATE and n not in FAILS_FIRST
    ]
    for number in numbers:
        await sandbox.charge(charge_request(number))
    rows = await sandbox.acquirer.charges()
    assert len(rows) == len(numbers)
    for row, number in zip(rows, numbers, strict=True):
        assert row.payer_masked == "****" + number[-4:]
        text = repr(row) + "".join(str(value) for value in wire.admin_charge_json(row).values())
        for secret in (number, number[:12], PAYEE):
            assert secret not in text


def test_request_hash_depends_on_masked_numbers_only():
    base = transformers.charge_params(charge_request(reference="pay_1", amount=100))
    same_last_four = transformers.charge_params(
        # Not a test account: any number with the same last four.
        charge_request("4000000000004242", reference="pay_1", amount=100)
    )
    other_amount = transformers.charge_params(charge_request(reference="pay_1", amount=101))
    assert base.request_hash() == same_last_four.request_hash()
    assert base.request_hash() != other_amount.request_hash()
    assert SUCCESS_CARD not in repr(base)


async def test_acquirer_stamps_rows_with_its_clock():
    moment = datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC)
    acquirer = SandboxAcquirer(MemoryLedger(), clock=lambda: moment)
    stored = await acquirer.charge("k1", transformers.charge_params(charge_request()))
    assert stored.created_at == moment
    assert await acquirer.status("k1") == stored
    assert await acquirer.status("unknown") is None


# -- stats ---------------------------------------------------------------------------------------


def test_stats_count_double_charges_per_reference_but_not_declines():
    rows = [
        record(payment_reference="pay_a"),
        record(payment_reference="pay_a"),
        record(SandboxStatus.DECLINED, payment_reference="pay_b"),
        record(payment_reference="pay_b"),
        record(SandboxStatus.DECLINED, payment_reference="pay_c"),
    ]
    stats = summarize(rows)
    assert stats.to_json() == {
        "charges": 5,
        "succeeded": 3,
        "declined": 2,
        "authorized": 0,
        "duplicateKeys": 0,
        "maxChargesPerReference": 2,
        "doubleChargedReferences": 1,
    }
    assert summarize([]).max_charges_per_reference == 0


# -- the in-process provider's surface ----------------------------------------------------------


async def test_in_process_provider_lifecycle():
    sandbox = InProcessSandboxProvider()
    assert sandbox.name == "sandbox"
    async with sandbox:
        assert (await sandbox.charge(charge_request())).status is ChargeStatus.SUCCEEDED
    await sandbox.stop()  # safe twice
    with pytest.raises(ValueError, match="either"):
        InProcessSandboxProvider(SandboxAcquirer(MemoryLedger()), config=FAST)


# -- transformers: the code map and the shapes ------------------------------------------------


def test_error_code_map_is_exhaustive_and_maps_to_declines():
    assert set(transformers.ERROR_CODES) == set(SandboxErrorCode)
    for sandbox_code, ours in transformers.ERROR_CODES.items():
        assert transformers.error_code_from_sandbox(sandbox_code.value) is ours
        assert CATALOGUE[ours].category is ErrorCategory.DECLINED


@pytest.mark.parametrize("code", ["do_not_honor", "", None])
def test_unknown_error_codes_map_to_a_safe_decline(code):
    assert transformers.UNKNOWN_ERROR_CODE is ErrorCode.PAYMENT_DECLINED
    assert transformers.error_code_from_sandbox(code) is ErrorCode.PAYMENT_DECLINED
    assert not CATALOGUE[transformers.UNKNOWN_ERROR_CODE].retryable


@pytest.mark.parametrize("status", list(SandboxStatus))
def test_every_sandbox_status_maps(status):
    assert transformers.outcome_from_record(record(status)).status.value == status.value


@pytest.mark.parametrize("number", [SUCCESS_CARD, INVALID_ACCOUNT_CARD])
def test_request_body_round_trips_through_the_service_parser(number):
    request = charge_request(number)
    parsed = wire.parse_charge_body(transformers.charge_body(request))
    assert parsed == transformers.charge_params(request)


@pytest.mark.parametrize("status", list(SandboxStatus))
def test_response_round_trips_to_the_same_outcome_as_the_record(status):
    row = record(status)
    from_http = transformers.outcome_from_body(wire.charge_json(row))
    from_record = transformers.outcome_from_record(row)
    assert (from_http.status, from_http.provider_reference) == (
        from_record.status,
        from_record.provider_reference,
    )
    if status is not SandboxStatus.DECLINED:
        assert from_http.error is None
        assert from_record.error is None
    else:
        assert from_http.error is not None
        assert from_record.error is not None
        for error in (from_http.error, from_record.error):
            assert error.code is ErrorCode.INSUFFICIENT_FUNDS
            assert error.decline_code == "insufficient_funds"
            assert error.message == "The account has insufficient funds."


def test_a_succeeded_charge_says_what_it_captured_over_http_and_in_process():
    """What paygate records when a void finds the charge captured by hand: a partial
    capture's amount, the same whichever way the sandbox is reached."""
    row = record(SandboxStatus.SUCCEEDED, captured_minor=700)
    from_http = transformers.outcome_from_body(wire.charge_json(row))
    from_record = transformers.outcome_from_record(row)
    assert from_http.captured == from_record.captured == Money(700, row.currency)


@pytest.mark.parametrize(("refunded", "said"), [(300, 300), (0, None), (None, None)])
def test_a_charge_read_by_id_says_what_its_refunds_returned_over_http_and_in_process(
    refunded, said
):
    """What paygate records when it finds a capture refunded by hand: the same whichever
    way the sandbox is reached; nothing refunded (or not said) is no amount."""
    row = record(SandboxStatus.SUCCEEDED, captured_minor=700)
    from_http = transformers.outcome_from_body(wire.charge_json(row, refunded_minor=refunded))
    from_record = transformers.outcome_from_record(row, refunded_minor=refunded)
    expected = None if said is None else Money(said, row.currency)
    assert from_http.refunded == from_record.refunded == expected


@pytest.mark.parametrize("captured", [True, "700", 0, -1])
def test_a_malformed_captured_amount_is_refused(captured):
    body = {"id": "ch_1", "status": "succeeded", "capturedMinor": captured, "currency": "EUR"}
    with pytest.raises(ValueError, match="captured"):
        transformers.outcome_from_body(body)


def test_a_decline_with_an_unknown_code_is_still_a_decline():
    body = {"id": "ch_1", "status": "declined", "errorCode": "brand_new", "message": None}
    outcome = transformers.outcome_from_body(body)
    assert outcome.status is ChargeStatus.DECLINED
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.PAYMENT_DECLINED
    assert outcome.error.message


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {"status": "succeeded"},
        {"id": "", "status": "succeeded"},
        {"id": "ch_1", "status": "pending"},
        {"id": "ch_1", "status": "declined", "errorCode": 5},
        {"id": "ch_1", "status": "declined", "message": ["x"]},
    ],
)
def test_unexpected_response_shapes_are_refused(body):
    with pytest.raises(ValueError):  # noqa: PT011
        transformers.outcome_from_body(body)


def _body(**changes: object) -> dict[str, object]:
    body = transformers.charge_body(charge_request())
    body.update(changes)
    return body


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ([], ErrorCode.INVALID_REQUEST, "body"),
        (_body(extra=1), ErrorCode.INVALID_REQUEST, "body"),
        (_body(amountMinor="10.50"), ErrorCode.INVALID_REQUEST, "amountMinor"),
        (_body(amountMinor=True), ErrorCode.INVALID_REQUEST, "amountMinor"),
        (_body(amountMinor=0), ErrorCode.INVALID_AMOUNT, "amountMinor"),
        (_body(currency="XYZ"), ErrorCode.UNSUPPORTED_CURRENCY, "currency"),
        (_body(currency=None), ErrorCode.UNSUPPORTED_CURRENCY, "currency"),
        (_body(paymentReference="has space"), ErrorCode.INVALID_REQUEST, "paymentReference"),
        (_body(paymentMethod="cheque"), ErrorCode.INVALID_REQUEST, "paymentMethod"),
        (_body(payerAccount="4242"), ErrorCode.INVALID_REQUEST, "payerAccount"),
        (
            _body(payerAccount={"type": "card", "number": "4242 4242 4242 4242"}),
            ErrorCode.INVALID_REQUEST,
            "payerAccount.number",
        ),
        (
            _body(payerAccount={"type": "cheque", "number": SUCCESS_CARD}),
            ErrorCode.INVALID_REQUEST,
            "payerAccount.type",
        ),
        (
            _body(payeeAccount={"type": "card", "number": SUCCESS_CARD, "cvc": "123"}),
            ErrorCode.INVALID_REQUEST,
            "payeeAccount",
        ),
    ],
)
def test_bad_bodies_name_the_field_and_never_echo_a_number(body, code, param):
    with pytest.raises(PaygateError) as caught:
        wire.parse_charge_body(body)
    assert (caught.value.code, caught.value.param) == (code, param)
    for secret in (SUCCESS_CARD, "4242 4242 4242 4242", PAYEE):
        assert secret not in caught.value.message


# -- the HTTP adapter's status translation (no network) --------------------------------------


def test_adapter_status_translation():
    adapter._raise_for_status(200, {}, None)
    with pytest.raises(PaygateError) as conflict:
        adapter._raise_for_status(409, {}, None)
    assert conflict.value.code is ErrorCode.IDEMPOTENCY_CONFLICT
    with pytest.raises(ProviderRateLimitedError) as limited:
        adapter._raise_for_status(429, {"Retry-After": "3"}, None)
    assert limited.value.retry_after == 3.0
    with pytest.raises(ProviderRateLimitedError) as past:
        adapter._raise_for_status(429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, None)
    assert past.value.retry_after == 0.0  # a date gone by: no wait
    with pytest.raises(ProviderRateLimitedError) as no_hint:
        adapter._raise_for_status(429, {"Retry-After": "soon"}, None)
    assert no_hint.value.retry_after is None
    unavailable = {"error": {"code": "provider_unavailable", "message": "down"}}
    with pytest.raises(ProviderUnavailableError, match="provider_unavailable: down") as down:
        adapter._raise_for_status(503, {}, unavailable)
    assert down.value.retry_after is None
    with pytest.raises(ProviderUnavailableError) as asked:
        adapter._raise_for_status(503, {"Retry-After": "inf"}, unavailable)
    assert asked.value.retry_after == MAX_RETRY_AFTER_S  # bounded where it enters
    for status in (500, 502, 504):
        with pytest.raises(ProviderTimeoutError):
            adapter._raise_for_status(status, {}, None)
    with pytest.raises(SandboxRequestRejectedError) as rejected:
        adapter._raise_for_status(400, {}, {"error": {"code": "invalid_request"}})
    assert not rejected.value.retriable
    assert not rejected.value.outcome_unknown


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (aiohttp.ConnectionTimeoutError(), ProviderUnavailableError),
        (aiohttp.SocketTimeoutError(), ProviderTimeoutError),
        (TimeoutError(), ProviderTimeoutError),
        (aiohttp.ServerDisconnectedError(), ProviderTimeoutError),
        (aiohttp.ClientPayloadError(), ProviderTimeoutError),
    ],
)
def test_adapter_transport_translation(exc, expected):
    with pytest.raises(expected) as caught, adapter._translate_client_errors():
        raise exc
    assert caught.value.__cause__ is exc


class _LookedUpLedger(MemoryLedger):
    """Tells when a charge call got as far as looking its key up (it is in flight then)."""

    def __init__(self) -> None:
        super().__init__()
        self.looked_up = asyncio.Event()

    async def get(self, idempotency_key: str) -> ChargeRecord | None:
        self.looked_up.set()
        return await super().get(idempotency_key)


async def test_service_sends_the_retry_after_and_lists_calls_in_flight():
    ledger = _LookedUpLedger()
    acquirer = SandboxAcquirer(ledger, SandboxConfig(account_latency_s=1.0))
    async with TestClient(TestServer(build_sandbox_app(acquirer))) as client:
        base = str(client.make_url("/"))
        async with adapter.SandboxHttpProvider(base, timeout_s=5.0) as http:
            with pytest.raises(ProviderUnavailableError) as caught:
                await http.charge(charge_request("4000000000000549", reference="pay_h"))
            assert caught.value.retry_after == MAX_RETRY_AFTER_S  # 1e12 asked, bounded
            slow = charge_request("4000000000000440", key="pay_l-a1", reference="pay_l")
            ledger.looked_up.clear()
            call = asyncio.create_task(http.charge(slow))
            await asyncio.wait_for(ledger.looked_up.wait(), 5.0)
            listed = await client.get("/admin/in-flight")
            assert await listed.json() == {
                "charges": [{"idempotencyKey": "pay_l-a1", "paymentReference": "pay_l"}]
            }
            assert (await call).status is ChargeStatus.SUCCEEDED
        assert await (await client.get("/admin/in-flight")).json() == {"charges": []}
        raw = await client.post(
            "/v1/charges",
            json=transformers.charge_body(charge_request("4000000000000556")),
            headers={"Idempotency-Key": "pay_raw-a1"},
        )
        assert (raw.status, raw.headers["Retry-After"]) == (503, "86400")


async def test_http_provider_needs_start_and_stops_twice():
    http = adapter.SandboxHttpProvider("http://127.0.0.1:9")
    assert http.name == "sandbox"
    with pytest.raises(RuntimeError, match="start"):
        await http.charge(charge_request())
    await http.stop()
    await http.stop()


# -- the documentation's table ----------------------------------------------------------------


def _doc_rows() -> dict[str, list[str]]:
    lines = DOC.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| payer number |"))
    assert lines[start] == (
        "| payer number | behaviour | ledger | answer | paygate error code | decline code |"
    )
    rows: dict[str, list[str]] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[1:]
    return rows


def _expected_cells(behaviour: Behaviour) -> list[str]:
    ledger = {AccountOutcome.UNAVAILABLE: "nothing"}.get(behaviour.outcome, behaviour.outcome.value)
    answer = {
        Timing.IMMEDIATE: "after `account_latency_s`" if behaviour.latency else "at once",
        Timing.SLOW: "after `slow_delay_s`",
        Timing.HANG: "after `hang_s`",
    }[behaviour.timing]
    asked = "" if behaviour.retry_after is None else f" with `Retry-After: {behaviour.retry_after}`"
    if behaviour.outcome is AccountOutcome.UNAVAILABLE:
        answer = f"HTTP 503{asked} at once"
    if behaviour.unavailable_first:
        ledger = f"nothing, then {ledger}"
        first = "after `account_latency_s`, " if behaviour.latency else ""
        answer = f"{first}HTTP 503{asked} on a payment's first call, then {answer}"
    code = (
        "-"
        if behaviour.error_code is None
        else f"`{transformers.ERROR_CODES[behaviour.error_code].value}`"
    )
    decline = "-" if behaviour.decline_code is None else f"`{behaviour.decline_code}`"
    if behaviour.payer_action:
        ledger = f"requires_action, then {ledger} (or declined, or expired)"
        answer = "at once, with a redirect `nextAction`"
    return [behaviour.summary, ledger, answer, code, decline]


def _doc_table(header: str) -> dict[str, list[str]]:
    lines = DOC.read_text(encoding="utf-8").splitlines()
    start = lines.index(header)
    rows: dict[str, list[str]] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[1:]
    return rows


_REFUND_CELLS = {
    RefundBehaviour.SUCCEED: ["succeeded", "succeeded", "-", "-"],
    RefundBehaviour.SETTLE_LATER: [
        "pending",
        "succeeded after `refund_settle_s`",
        "-",
        "-",
    ],
    RefundBehaviour.FAIL: ["failed", "failed", "`refund_failed`", "`refund_declined`"],
}


def test_docs_refund_table_matches_the_code_table():
    rows = _doc_table(
        "| payer number | refund answer | status query | paygate error code | decline code |"
    )
    assert set(_REFUND_CELLS) == set(RefundBehaviour)
    assert rows.pop("any other number") == _REFUND_CELLS[RefundBehaviour.SUCCEED]
    listed = {n for n, b in TEST_ACCOUNTS.items() if b.refunds is not RefundBehaviour.SUCCEED}
    assert set(rows) == listed
    for number, cells in rows.items():
        assert cells == _REFUND_CELLS[TEST_ACCOUNTS[number].refunds], number


def test_docs_table_matches_the_code_table():
    rows = _doc_rows()
    assert rows.pop("any other valid number") == _expected_cells(DEFAULT_BEHAVIOUR)
    assert set(rows) == set(TEST_ACCOUNTS)
    for number, cells in rows.items():
        assert cells == _expected_cells(TEST_ACCOUNTS[number]), number
