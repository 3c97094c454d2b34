"""In-doubt payments and idempotency key expiry, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from sqlalchemy import select

from consumer.key_expiry import KeyExpiry
from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents, PaymentFacts
from consumer.payment_handler import PaymentCommandHandler
from consumer.payment_outcomes import PaymentOutcomes
from consumer.payment_reconciler import PaymentReconciler
from consumer.sealing import CommandSealer
from domain.errors import ErrorCode
from domain.payments import payment_request_id_for
from domain.status import PaymentStatus
from persistence.tables import outbox, provider_attempts
from providers.errors import ProviderTimeoutError, ProviderUnavailableError
from providers.registry import Providers
from providers.routing import Router
from providers.sandbox import InProcessSandboxProvider, SandboxConfig
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import (
    ACCOUNT_KEY,
    DECLINED_CARD,
    TIMEOUT_CARD,
    TIMEOUT_THEN_DECLINE_CARD,
    create_payment,
    unexpected_refusal,
)

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()
EVENTS = PaymentEvents(MESSAGES, "payments.results")


@pytest.fixture
async def provider():
    """Times out fast: every test here starts from a timed-out payment."""
    provider = InProcessSandboxProvider(config=SandboxConfig(hang_s=0.3), call_timeout_s=0.05)
    await provider.start()
    yield provider
    await provider.stop()


def handler_for(store, provider, clock):
    return PaymentCommandHandler(
        store=store,
        providers=Providers.of(provider),
        router=Router.catch_all(provider.name),
        events=EVENTS,
        account_key=ACCOUNT_KEY,
        metrics=Metrics(),
        clock=clock,
    )


def reconciler_for(store, provider, clock, metrics=None):
    return PaymentReconciler(
        store=store,
        handler=handler_for(store, provider, clock),
        metrics=metrics or Metrics(),
        min_age=timedelta(seconds=30),
        clock=clock,
    )


async def _statuses_published(engine, payment_id):
    async with engine.connect() as conn:
        payloads = (await conn.execute(select(outbox.c.payload))).scalars().all()
    return [
        e.status
        for e in map(MESSAGES.decode_result, payloads)
        if e.payment_request_id == payment_id
    ]


@pytest.mark.parametrize(
    ("card", "final", "code"),
    [
        (TIMEOUT_CARD, PaymentStatus.SUCCEEDED, None),
        (TIMEOUT_THEN_DECLINE_CARD, PaymentStatus.FAILED, ErrorCode.PAYMENT_DECLINED),
    ],
    ids=["to-success", "to-failure"],
)
async def test_timeout_is_reconciled_from_the_providers_answer(
    handler, store, engine, provider, clock, card, final, code
):
    command = create_payment(payer_number=card)
    assert await handler.handle(command) is Outcome.PENDING
    reconciler = reconciler_for(store, provider, clock)

    young = await reconciler.run_once()
    assert young.checked == 0  # still within min_age: it may be in flight

    clock.now += timedelta(seconds=31)
    report = await reconciler.run_once()
    assert (report.checked, report.resolved) == (1, 1)
    payment = await store.get_payment(command.payment_request_id)
    assert payment.status is final
    assert (payment.error.code if payment.error else None) is code
    assert await _statuses_published(engine, command.payment_request_id) == [
        PaymentStatus.PENDING,
        final,
    ]
    assert len(await provider.acquirer.charges()) == 1  # asked, never charged again

    clock.now += timedelta(seconds=31)
    assert (await reconciler.run_once()).checked == 0  # nothing left in doubt


async def test_an_attempt_the_provider_never_saw_is_resent_by_the_reconciler(
    store, engine, provider, clock
):
    command = create_payment()
    # The consumer died after the write-ahead commit (with the command sealed into the
    # attempt, as the handler writes it), before the provider call.
    await store.begin(
        command,
        provider="sandbox",
        account_key=ACCOUNT_KEY,
        refusal_event=unexpected_refusal,
        seal=CommandSealer(ACCOUNT_KEY).seal,
    )
    reconciler = reconciler_for(store, provider, clock)
    clock.now += timedelta(seconds=20)
    assert (await reconciler.run_once()).checked == 0  # its owner's claim still stands

    clock.now += timedelta(seconds=20)
    report = await reconciler.run_once()
    assert (report.checked, report.resolved) == (1, 1)
    payment = await store.get_payment(command.payment_request_id)
    assert payment.status is PaymentStatus.SUCCEEDED
    (charge,) = await provider.acquirer.charges()
    assert charge.idempotency_key == f"{command.payment_request_id}-a1"
    assert await _sealed_requests(engine, command.payment_request_id) == [None]


async def _sealed_requests(engine, payment_id):
    async with engine.connect() as conn:
        return list(
            (
                await conn.execute(
                    select(provider_attempts.c.sealed_request).where(
                        provider_attempts.c.payment_id == payment_id
                    )
                )
            ).scalars()
        )


async def test_an_unseen_attempt_without_a_sealed_command_is_abandoned_only_when_old(
    store, engine, provider, clock
):
    command = create_payment()
    # Begun without a sealed command (as by a release before attempts carried one).
    await store.begin(
        command, provider="sandbox", account_key=ACCOUNT_KEY, refusal_event=unexpected_refusal
    )
    reconciler = reconciler_for(store, provider, clock)

    clock.now += timedelta(minutes=5)
    report = await reconciler.run_once()
    assert (report.checked, report.still_pending) == (1, 1)
    assert (await store.get_payment(command.payment_request_id)).status is PaymentStatus.PROCESSING

    clock.now += timedelta(hours=1)
    report = await reconciler.run_once()
    assert report.resolved == 1
    payment = await store.get_payment(command.payment_request_id)
    assert payment.status is PaymentStatus.FAILED
    assert payment.error.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert await provider.acquirer.charges() == []


async def test_an_unseen_attempt_is_resent_by_a_redelivery_once_its_owner_is_gone(
    store, handler, provider, clock
):
    command = create_payment()
    await store.begin(
        command, provider="sandbox", account_key=ACCOUNT_KEY, refusal_event=unexpected_refusal
    )
    clock.now += timedelta(seconds=10)  # the first owner's claim still stands
    assert await handler.handle(command) is Outcome.OWNED_ELSEWHERE
    assert await provider.acquirer.charges() == []
    clock.now += timedelta(minutes=45)
    assert await handler.handle(command) is Outcome.SUCCEEDED
    assert len(await provider.acquirer.charges()) == 1


async def test_an_unreachable_provider_leaves_payments_pending(store, handler, provider, clock):
    command = create_payment(payer_number=TIMEOUT_CARD)
    await handler.handle(command)

    async def unreachable(_key):
        raise ProviderUnavailableError("sandbox", "connection refused")

    provider.charge_status = unreachable
    clock.now += timedelta(hours=2)
    report = await reconciler_for(store, provider, clock).run_once()
    assert (report.checked, report.still_pending) == (1, 1)
    assert (await store.get_payment(command.payment_request_id)).status is PaymentStatus.PENDING


async def test_redelivery_and_reconciler_resolving_together_record_once(
    store, handler, engine, provider, clock
):
    command = create_payment(payer_number=TIMEOUT_CARD)
    await handler.handle(command)
    clock.now += timedelta(seconds=31)
    assert await handler.handle(command) is Outcome.SUCCEEDED  # the redelivery wins
    report = await reconciler_for(store, provider, clock).run_once()
    assert report.checked == 0
    statuses = await _statuses_published(engine, command.payment_request_id)
    assert statuses.count(PaymentStatus.SUCCEEDED) == 1


async def test_a_late_timeout_does_not_undo_an_outcome_the_reconciler_recorded(
    store, handler, engine, provider, clock
):
    command = create_payment(payer_number=TIMEOUT_CARD)
    await handler.handle(command)  # pending, attempt open
    clock.now += timedelta(seconds=31)
    assert (await reconciler_for(store, provider, clock).run_once()).resolved == 1
    # The slow call's "no answer in time" is recorded after the reconciler's answer.
    payment = await store.get_payment(command.payment_request_id)
    recorder = PaymentOutcomes(store, EVENTS, clock)
    late = await recorder.provider_error(
        PaymentFacts.of_stored(payment),
        f"{command.payment_request_id}-a1",
        ProviderTimeoutError("sandbox", "no answer"),
        provider="sandbox",
        claim="the-slow-workers-claim",
    )
    assert late is Outcome.REPLAYED
    assert (await store.get_payment(command.payment_request_id)).status is PaymentStatus.SUCCEEDED


async def test_a_key_replays_within_retention_and_makes_a_new_payment_after_expiry(
    store, handler, provider, clock
):
    declined = create_payment(payer_number=DECLINED_CARD)
    assert await handler.handle(declined) is Outcome.FAILED
    expiry = KeyExpiry(store, timedelta(days=7), clock)

    clock.now += timedelta(days=6)
    assert await expiry.run_once() == 0
    again = dataclasses.replace(declined, new_attempt=True, payer=declined.payee)
    # Within retention the key still stands for the first payment: other parameters are a
    # conflict, the same ones a replay.
    assert await handler.handle(again) is Outcome.CONFLICT
    assert await handler.handle(declined) is Outcome.REPLAYED

    clock.now += timedelta(days=2)
    assert await expiry.run_once() == 1
    retry = dataclasses.replace(
        create_payment(order_id=declined.order_id, idempotency_key=declined.idempotency_key),
        new_attempt=True,
    )
    assert await handler.handle(retry) is Outcome.SUCCEEDED
    first = await store.get_payment(declined.payment_request_id)
    assert first.status is PaymentStatus.FAILED  # untouched
    second_id = payment_request_id_for(declined.order_id, declined.idempotency_key, 1)
    second = await store.get_payment(second_id)
    assert second.status is PaymentStatus.SUCCEEDED
    assert len(await provider.acquirer.charges()) == 2


async def test_keys_are_kept_at_least_seven_days(store):
    with pytest.raises(ValueError, match="at least 7 days"):
        KeyExpiry(store, timedelta(days=6))
