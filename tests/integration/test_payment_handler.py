"""The handler and the store on real databases (SQLite and PostgreSQL), provider in process."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from consumer.outcome import Outcome
from domain.errors import ErrorCode
from domain.status import PaymentStatus
from persistence.payment_begin import Existing, Started
from persistence.tables import outbox, provider_attempts
from providers.sandbox import InProcessSandboxProvider, SandboxConfig
from schemas.payments import PaymentMessages
from tests.support.builders import (
    ACCOUNT_KEY,
    DECLINED_CARD,
    INSUFFICIENT_FUNDS_CARD,
    PAYEE_IBAN,
    SUCCESS_CARD,
    TIMEOUT_CARD,
    TIMEOUT_THEN_DECLINE_CARD,
    UNAVAILABLE_CARD,
    create_payment,
    unexpected_refusal,
)

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()


@pytest.fixture
async def provider():
    """Times out fast (and answers slow numbers fast): these tests drive timeouts."""
    provider = InProcessSandboxProvider(
        config=SandboxConfig(hang_s=0.5, slow_delay_s=0.01), call_timeout_s=0.1
    )
    await provider.start()
    yield provider
    await provider.stop()


def _attempt_of(command):
    return select(provider_attempts).where(
        provider_attempts.c.payment_id == command.payment_request_id
    )


async def _events(engine, payment_id):
    async with engine.connect() as conn:
        rows = (await conn.execute(select(outbox.c.event_id, outbox.c.payload))).all()
    events = [MESSAGES.decode_result(r.payload) for r in rows]
    return [e for e in events if e.payment_request_id == payment_id]


async def test_success_is_stored_with_its_event(handler, store, engine, provider):
    command = create_payment(payer_number=SUCCESS_CARD)
    assert await handler.handle(command) is Outcome.SUCCEEDED
    payment = await store.get_payment(command.payment_request_id)
    assert payment is not None
    assert payment.status is PaymentStatus.SUCCEEDED
    assert payment.provider == "sandbox"
    assert payment.provider_reference
    assert payment.payer.masked == "****4242"
    (event,) = await _events(engine, command.payment_request_id)
    assert event.status is PaymentStatus.SUCCEEDED
    assert event.payment_result is True
    assert event.amount == command.amount
    assert len(await provider.acquirer.charges()) == 1


@pytest.mark.parametrize(
    ("card", "code"),
    [
        (DECLINED_CARD, ErrorCode.PAYMENT_DECLINED),
        (INSUFFICIENT_FUNDS_CARD, ErrorCode.INSUFFICIENT_FUNDS),
    ],
)
async def test_declines_fail_with_their_code(handler, store, engine, card, code):
    command = create_payment(payer_number=card)
    assert await handler.handle(command) is Outcome.FAILED
    payment = await store.get_payment(command.payment_request_id)
    assert payment.status is PaymentStatus.FAILED
    assert payment.error.code is code
    assert payment.error.decline_code
    (event,) = await _events(engine, command.payment_request_id)
    assert event.error.code is code
    assert event.payment_result is False


async def test_provider_unavailable_fails_without_a_charge(handler, store, provider):
    command = create_payment(payer_number=UNAVAILABLE_CARD)
    assert await handler.handle(command) is Outcome.FAILED
    payment = await store.get_payment(command.payment_request_id)
    assert payment.error.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert await provider.acquirer.charges() == []


async def test_redelivery_replays_the_first_outcome_without_a_second_charge(
    handler, engine, provider, metrics
):
    command = create_payment()
    assert await handler.handle(command) is Outcome.SUCCEEDED
    assert await handler.handle(command) is Outcome.REPLAYED
    events = await _events(engine, command.payment_request_id)
    assert len(events) == 2
    assert events[0].event_id == events[1].event_id
    assert len(await provider.acquirer.charges()) == 1
    assert metrics.commands_consumed.labels("payment", "replayed")._value.get() == 1


async def test_same_key_other_parameters_is_a_conflict_and_changes_nothing(
    handler, store, engine, provider
):
    command = create_payment()
    await handler.handle(command)
    other = create_payment(
        order_id=command.order_id,
        idempotency_key=command.idempotency_key,
        payer_number=DECLINED_CARD,
    )
    assert other.payment_request_id == command.payment_request_id
    assert await handler.handle(other) is Outcome.CONFLICT
    payment = await store.get_payment(command.payment_request_id)
    assert payment.status is PaymentStatus.SUCCEEDED
    events = await _events(engine, command.payment_request_id)
    assert [e.error.code for e in events if e.error] == [ErrorCode.IDEMPOTENCY_CONFLICT]
    assert len(await provider.acquirer.charges()) == 1


@pytest.mark.parametrize(
    ("card", "final", "attempt_status"),
    [
        (TIMEOUT_CARD, PaymentStatus.SUCCEEDED, "succeeded"),
        (TIMEOUT_THEN_DECLINE_CARD, PaymentStatus.FAILED, "declined"),
    ],
)
async def test_timeout_leaves_it_pending_and_redelivery_asks_the_provider(
    handler, store, engine, provider, card, final, attempt_status
):
    command = create_payment(payer_number=card)
    assert await handler.handle(command) is Outcome.PENDING
    payment = await store.get_payment(command.payment_request_id)
    assert payment.status is PaymentStatus.PENDING
    assert payment.error.code is ErrorCode.PROVIDER_TIMEOUT
    async with engine.connect() as conn:
        attempt = (await conn.execute(_attempt_of(command))).one()
    assert attempt.finished_at is None  # in doubt

    assert (await handler.handle(command)).value == final.value
    payment = await store.get_payment(command.payment_request_id)
    assert payment.status is final
    assert len(await provider.acquirer.charges()) == 1  # asked, never charged again
    async with engine.connect() as conn:
        attempt = (await conn.execute(_attempt_of(command))).one()
    assert attempt.status == attempt_status
    assert attempt.finished_at is not None


async def test_crash_after_write_ahead_is_resolved_by_the_provider_not_by_guessing(
    store, handler, provider, clock
):
    command = create_payment()
    # A consumer that died right after the write-ahead commit, before calling the provider.
    started = await store.begin(
        command, provider="sandbox", account_key=ACCOUNT_KEY, refusal_event=unexpected_refusal
    )
    assert isinstance(started, Started)
    existing = await store.begin(
        command, provider="sandbox", account_key=ACCOUNT_KEY, refusal_event=unexpected_refusal
    )
    assert isinstance(existing, Existing)
    assert existing.open_attempt_key == started.attempt_key
    assert existing.payment.status is PaymentStatus.PROCESSING

    # The dead consumer's claim holds until it expires; then the redelivery takes it over.
    assert await handler.handle(command) is Outcome.OWNED_ELSEWHERE
    assert await provider.acquirer.charges() == []
    clock.now += timedelta(seconds=31)
    assert await handler.handle(command) is Outcome.SUCCEEDED
    (charge,) = await provider.acquirer.charges()
    assert charge.idempotency_key == started.attempt_key


async def test_no_clear_account_number_reaches_the_database(handler, engine):
    for card in (SUCCESS_CARD, DECLINED_CARD, INSUFFICIENT_FUNDS_CARD):
        await handler.handle(create_payment(payer_number=card))
    async with engine.connect() as conn:
        for table in ("payments", "provider_attempts"):
            rows = (await conn.execute(text(f"SELECT * FROM {table}"))).all()  # noqa: S608
            dump = repr(rows)
            for number in (SUCCESS_CARD, DECLINED_CARD, INSUFFICIENT_FUNDS_CARD, PAYEE_IBAN):
                assert number not in dump


async def test_many_payments_handled_at_once_all_land_exactly_once(handler, store, provider):
    # The consumer runs up to max_in_flight commands at once; the store must take that
    # without lock errors (SQLite) or lost updates (PostgreSQL).
    commands = [create_payment() for _ in range(60)]
    outcomes = await asyncio.gather(*(handler.handle(c) for c in commands))
    assert set(outcomes) == {Outcome.SUCCEEDED}
    for command in commands:
        payment = await store.get_payment(command.payment_request_id)
        assert payment.status is PaymentStatus.SUCCEEDED
    assert len(await provider.acquirer.charges()) == 60


async def _stored_error(store, command):
    payment = await store.get_payment(command.payment_request_id)
    return payment.status, payment.error.code if payment.error else None


async def test_a_paid_order_is_not_charged_by_a_second_payment(handler, store, engine, provider):
    first = create_payment()
    assert await handler.handle(first) is Outcome.SUCCEEDED
    second = create_payment(order_id=first.order_id)  # a new idempotency key
    assert await handler.handle(second) is Outcome.REFUSED
    assert await _stored_error(store, second) == (
        PaymentStatus.FAILED,
        ErrorCode.ORDER_ALREADY_PAID,
    )
    (event,) = await _events(engine, second.payment_request_id)
    assert event.error.code is ErrorCode.ORDER_ALREADY_PAID
    assert len(await provider.acquirer.charges()) == 1
    # Re-sent, the refusal replays; it does not turn into a charge.
    assert await handler.handle(second) is Outcome.REPLAYED
    assert len(await provider.acquirer.charges()) == 1


async def test_after_a_failure_only_an_explicit_new_attempt_charges(handler, store, provider):
    declined = create_payment(payer_number=DECLINED_CARD)
    assert await handler.handle(declined) is Outcome.FAILED
    retry = create_payment(order_id=declined.order_id)
    assert await handler.handle(retry) is Outcome.REFUSED
    assert await _stored_error(store, retry) == (
        PaymentStatus.FAILED,
        ErrorCode.NEW_ATTEMPT_REQUIRED,
    )
    explicit = dataclasses.replace(create_payment(order_id=declined.order_id), new_attempt=True)
    assert await handler.handle(explicit) is Outcome.SUCCEEDED
    charges = await provider.acquirer.charges()
    assert [c.status.value for c in charges] == ["declined", "succeeded"]


async def test_an_order_with_an_unresolved_payment_is_not_charged_again(handler, store):
    pending = create_payment(payer_number=TIMEOUT_CARD)
    assert await handler.handle(pending) is Outcome.PENDING
    again = dataclasses.replace(create_payment(order_id=pending.order_id), new_attempt=True)
    assert await handler.handle(again) is Outcome.REFUSED
    assert await _stored_error(store, again) == (
        PaymentStatus.FAILED,
        ErrorCode.ORDER_ALREADY_PAID,
    )


async def test_concurrent_payments_of_one_order_charge_it_once(handler, store, provider):
    # Key ordering keeps one order's commands apart in a consumer; this bypasses it, as a
    # zombie consumer after a rebalance could, and relies on the database alone.
    order = create_payment().order_id
    commands = [create_payment(order_id=order) for _ in range(20)]
    outcomes = await asyncio.gather(*(handler.handle(c) for c in commands))
    assert outcomes.count(Outcome.SUCCEEDED) == 1
    assert outcomes.count(Outcome.REFUSED) == 19
    assert len(await provider.acquirer.charges()) == 1
