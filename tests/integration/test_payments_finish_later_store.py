"""Payments that finish later on real databases (SQLite and PostgreSQL), with the sandbox's
3-D-Secure-like test number in process: the payment waits for its payer holding no claim,
the reconciler finishes it from the sandbox's answer or closes it once the action expired."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.payment_reconciler import PaymentReconciler
from domain.errors import ErrorCode
from domain.next_action import NextActionType
from domain.status import PaymentStatus
from persistence.attempts import ATTEMPT_DECLINED, ATTEMPT_REQUIRES_ACTION, ATTEMPT_SUCCEEDED
from persistence.engine import as_utc
from persistence.tables import outbox, payments, provider_attempts
from providers.registry import Providers
from providers.routing import Router
from providers.sandbox import InProcessSandboxProvider, SandboxAcquirer, SandboxConfig
from providers.sandbox.ledger import MemoryLedger
from schemas.payments import PaymentMessages
from tests.support.builders import ACCOUNT_KEY, PAYER_ACTION_CARD, create_payment

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()
TTL_S = 900.0
MIN_AGE = timedelta(seconds=30)


@pytest.fixture
async def provider(clock) -> AsyncIterator[InProcessSandboxProvider]:
    """The sandbox on the test's clock, so that actions expire when the test says."""
    acquirer = SandboxAcquirer(MemoryLedger(), SandboxConfig(action_ttl_s=TTL_S), clock=clock)
    async with InProcessSandboxProvider(acquirer) as provider:
        yield provider


@pytest.fixture
def handler(store, provider, metrics, clock) -> PaymentCommandHandler:
    return PaymentCommandHandler(
        store=store,
        providers=Providers.of(provider),
        router=Router.catch_all(provider.name),
        events=PaymentEvents(MESSAGES, "payments.results"),
        account_key=ACCOUNT_KEY,
        metrics=metrics,
        clock=clock,
    )


@pytest.fixture
def reconciler(store, handler, metrics, clock) -> PaymentReconciler:
    return PaymentReconciler(
        store=store, handler=handler, metrics=metrics, min_age=MIN_AGE, clock=clock
    )


async def _rows(engine, payment_id):
    async with engine.connect() as conn:
        payment = (await conn.execute(select(payments).where(payments.c.id == payment_id))).one()
        attempt = (
            await conn.execute(
                select(provider_attempts).where(provider_attempts.c.payment_id == payment_id)
            )
        ).one()
        events = [
            MESSAGES.decode_result(row.payload)
            for row in (await conn.execute(select(outbox.c.payload))).all()
        ]
    return payment, attempt, [e for e in events if e.payment_request_id == payment_id]


async def _waiting(handler, store, engine, clock):
    command = create_payment(payer_number=PAYER_ACTION_CARD)
    assert await handler.handle(command) is Outcome.REQUIRES_ACTION
    clock.now += MIN_AGE * 2
    return command


async def test_it_waits_unclaimed_with_its_action_and_the_payer_finishes_it(
    handler, reconciler, store, engine, provider, clock
):
    command = await _waiting(handler, store, engine, clock)
    pid = command.payment_request_id
    view = await store.get_payment(pid)
    assert view is not None
    assert view.status is PaymentStatus.REQUIRES_ACTION
    action = view.next_action
    assert action is not None
    assert action.type is NextActionType.REDIRECT_URL
    assert action.url is not None
    assert view.provider_reference is not None
    assert action.url.endswith(f"/v1/actions/{view.provider_reference}")
    payment, attempt, events = await _rows(engine, pid)
    assert (payment.claim_token, attempt.status, attempt.finished_at) == (
        None,
        ATTEMPT_REQUIRES_ACTION,
        None,
    )
    assert attempt.provider_reference is None
    assert [e.status for e in events] == [PaymentStatus.REQUIRES_ACTION]

    # The payer has not acted: the reconciler asks and changes nothing.
    report = await reconciler.run_once()
    assert (report.checked, report.still_pending) == (1, 1)
    payment = (await _rows(engine, pid))[0]
    assert payment.claim_token is None

    # The sandbox does not notify: the payer's action is seen at the next check.
    await provider.acquirer.complete_action(view.provider_reference, approve=True)
    clock.now = as_utc(payment.next_check_at)
    report = await reconciler.run_once()
    assert report.resolved == 1
    payment, attempt, events = await _rows(engine, pid)
    assert (payment.status, payment.next_action_type, payment.claim_token) == (
        "succeeded",
        None,
        None,
    )
    assert attempt.status == ATTEMPT_SUCCEEDED
    assert attempt.finished_at is not None
    assert [e.status for e in events] == [PaymentStatus.REQUIRES_ACTION, PaymentStatus.SUCCEEDED]
    assert (await provider.acquirer.stats()).max_charges_per_reference == 1


async def test_never_acted_on_it_is_closed_at_the_provider_and_expires(
    handler, reconciler, store, engine, provider, clock
):
    command = await _waiting(handler, store, engine, clock)
    clock.now += timedelta(seconds=TTL_S)

    await reconciler.run_once()

    payment, attempt, events = await _rows(engine, command.payment_request_id)
    assert (payment.status, payment.error_code) == ("expired", ErrorCode.PAYMENT_EXPIRED.value)
    assert attempt.status == ATTEMPT_DECLINED
    assert attempt.finished_at is not None
    assert [e.status for e in events] == [PaymentStatus.REQUIRES_ACTION, PaymentStatus.EXPIRED]
    (charge,) = await provider.acquirer.charges()
    assert charge.status.value == "expired"  # the payer can no longer pay it
    # Nothing left for the reconciler.
    assert (await reconciler.run_once()).checked == 0


async def _next_check_at(engine, payment_id):
    return as_utc((await _rows(engine, payment_id))[0].next_check_at)


async def test_a_payment_just_checked_is_not_asked_again_before_its_time(
    handler, store, engine, metrics, clock
):
    # Each pause is as long as the payment has waited, up to the cap (here 100 s).
    reconciler = PaymentReconciler(
        store=store,
        handler=handler,
        metrics=metrics,
        min_age=MIN_AGE,
        clock=clock,
        waiting_max=timedelta(seconds=100),
    )
    command = await _waiting(handler, store, engine, clock)  # waited 60 s
    pid = command.payment_request_id
    checked_at = clock.now
    assert (await reconciler.run_once()).still_pending == 1
    assert await _next_check_at(engine, pid) == checked_at + timedelta(seconds=60)

    clock.now = checked_at + timedelta(seconds=59)
    assert (await reconciler.run_once()).checked == 0
    clock.now = checked_at + timedelta(seconds=60)  # waited 120 s: the cap, 100 s, holds
    assert (await reconciler.run_once()).still_pending == 1
    assert await _next_check_at(engine, pid) == clock.now + timedelta(seconds=100)
    clock.now += timedelta(seconds=99)
    assert (await reconciler.run_once()).checked == 0
    clock.now += timedelta(seconds=1)
    assert (await reconciler.run_once()).still_pending == 1


async def test_the_pause_ends_at_the_action_expiry_and_the_payment_expires_then(
    handler, reconciler, store, engine, provider, clock
):
    command = await _waiting(handler, store, engine, clock)
    pid = command.payment_request_id
    view = await store.get_payment(pid)
    assert view is not None
    assert view.next_action is not None
    expires_at = view.next_action.expires_at
    clock.now = expires_at - timedelta(seconds=10)
    assert (await reconciler.run_once()).still_pending == 1
    assert await _next_check_at(engine, pid) == expires_at  # not the pause of 120 s

    clock.now = expires_at
    await reconciler.run_once()
    payment, _, events = await _rows(engine, pid)
    assert (payment.status, payment.error_code) == ("expired", ErrorCode.PAYMENT_EXPIRED.value)
    assert [e.status for e in events] == [PaymentStatus.REQUIRES_ACTION, PaymentStatus.EXPIRED]


async def test_a_redelivered_command_charges_nothing_more(handler, store, engine, provider, clock):
    command = await _waiting(handler, store, engine, clock)

    assert await handler.handle(command) is Outcome.REPLAYED

    assert len(await provider.acquirer.charges()) == 1
    _payment, _attempt, events = await _rows(engine, command.payment_request_id)
    assert [e.status for e in events] == [PaymentStatus.REQUIRES_ACTION] * 2
    assert events[0].event_id == events[1].event_id
