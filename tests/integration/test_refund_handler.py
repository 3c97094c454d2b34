"""Refunds through the handler, the store on SQLite and PostgreSQL, the sandbox in process."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.refund_events import RefundEvents
from consumer.refund_handler import RefundCommandHandler
from consumer.refund_reconciler import RefundReconciler
from domain.errors import ErrorCode
from domain.events import RefundResult
from domain.money import Money
from domain.refunds import RefundPayment, RefundStatus
from domain.status import PaymentStatus
from persistence.refund_store import RefundStarted, RefundStore
from persistence.tables import outbox
from providers.port import RefundRequest
from providers.registry import Providers
from providers.routing import Router
from providers.sandbox import InProcessSandboxProvider, SandboxConfig
from schemas.payments import PaymentMessages
from tests.support.builders import (
    DECLINED_CARD,
    REFUNDS_FAIL_CARD,
    REFUNDS_PENDING_CARD,
    SUCCESS_CARD,
    create_payment,
    unique,
)

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()
EUR_100 = Money(10_000, "EUR")


@pytest.fixture
async def provider():
    """Times out fast, and settles pending refunds within a test: these tests drive both."""
    provider = InProcessSandboxProvider(
        config=SandboxConfig(hang_s=0.5, refund_settle_s=0.2), call_timeout_s=0.2
    )
    await provider.start()
    yield provider
    await provider.stop()


@pytest.fixture
def refund_store(engine, store, clock):
    return RefundStore(engine, store.writes, clock)


@pytest.fixture
def payments(store, provider, metrics):
    return PaymentCommandHandler(
        store=store,
        providers=Providers.of(provider),
        router=Router.catch_all(provider.name),
        events=PaymentEvents(MESSAGES, "payments.results"),
        account_key=b"k",
        metrics=metrics,
    )


@pytest.fixture
def refunds(refund_store, provider, metrics):
    return RefundCommandHandler(
        store=refund_store,
        providers=Providers.of(provider),
        events=RefundEvents(MESSAGES, "payments.results"),
        metrics=metrics,
    )


async def paid(payments, card=SUCCESS_CARD, amount=EUR_100):
    command = create_payment(payer_number=card, amount=amount)
    assert await payments.handle(command) is Outcome.SUCCEEDED
    return command


def refund_of(payment, amount: Money | None, key: str | None = None) -> RefundPayment:
    return RefundPayment.create(
        idempotency_key=key or unique("refund"),
        payment_request_id=payment.payment_request_id,
        order_id=payment.order_id,
        amount=amount,
        reason="requested_by_customer",
        requested_at=datetime.now(UTC),
    )


async def refund_events(engine, refund_id) -> list[RefundResult]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(outbox.c.payload).order_by(outbox.c.id))).all()
    events = [MESSAGES.decode_any_result(r.payload) for r in rows]
    return [e for e in events if isinstance(e, RefundResult) and e.refund_id == refund_id]


async def test_partial_multiple_and_full_refunds(
    payments, refunds, store, refund_store, provider, clock
):
    payment = await paid(payments)
    first, second, rest = (
        refund_of(payment, Money(3_000, "EUR")),
        refund_of(payment, Money(2_000, "EUR")),
        refund_of(payment, None),
    )
    assert await refunds.handle(first) is Outcome.SUCCEEDED
    view = await store.get_payment(payment.payment_request_id)
    assert (view.status, view.refunded_minor) == (PaymentStatus.PARTIALLY_REFUNDED, 3_000)
    clock.now += timedelta(seconds=1)
    assert await refunds.handle(second) is Outcome.SUCCEEDED
    clock.now += timedelta(seconds=1)
    assert await refunds.handle(rest) is Outcome.SUCCEEDED
    view = await store.get_payment(payment.payment_request_id)
    assert (view.status, view.refunded_minor, view.refundable_minor) == (
        PaymentStatus.REFUNDED,
        10_000,
        0,
    )
    stored = await refund_store.of_payment(payment.payment_request_id)
    assert [r.amount for r in stored] == [
        Money(3_000, "EUR"),
        Money(2_000, "EUR"),
        Money(5_000, "EUR"),
    ]
    assert all(r.provider_reference for r in stored)
    ledger = await provider.acquirer.refunds()
    assert sorted(r.amount_minor for r in ledger) == [2_000, 3_000, 5_000]


async def test_a_redelivered_refund_replays_and_refunds_once(payments, refunds, provider, engine):
    payment = await paid(payments)
    command = refund_of(payment, Money(1_000, "EUR"))
    assert await refunds.handle(command) is Outcome.SUCCEEDED
    assert await refunds.handle(command) is Outcome.REPLAYED
    assert len(await provider.acquirer.refunds()) == 1
    events = await refund_events(engine, command.refund_id)
    # The replayed event is the first one again, with its id: readers drop it.
    assert {e.event_id for e in events} == {events[0].event_id}
    assert events[0].status is RefundStatus.SUCCEEDED
    assert events[0].payment_status is PaymentStatus.PARTIALLY_REFUNDED
    assert events[0].payment_refunded_minor == 1_000


async def test_same_key_other_amount_is_a_conflict(payments, refunds, store, engine):
    payment = await paid(payments)
    await refunds.handle(refund_of(payment, Money(1_000, "EUR"), key="k-1"))
    conflicting = refund_of(payment, Money(9_000, "EUR"), key="k-1")
    assert await refunds.handle(conflicting) is Outcome.CONFLICT
    assert (await store.get_payment(payment.payment_request_id)).refunded_minor == 1_000
    codes = [e.error.code for e in await refund_events(engine, conflicting.refund_id) if e.error]
    assert codes == [ErrorCode.IDEMPOTENCY_CONFLICT]


async def test_a_declined_payment_is_not_refundable(payments, refunds, engine, provider):
    command = create_payment(payer_number=DECLINED_CARD)
    assert await payments.handle(command) is Outcome.FAILED
    refund = refund_of(command, None)
    assert await refunds.handle(refund) is Outcome.REFUSED
    (event,) = await refund_events(engine, refund.refund_id)
    assert event.status is RefundStatus.FAILED
    assert event.error is not None
    assert event.error.code is ErrorCode.PAYMENT_NOT_REFUNDABLE
    assert event.payment_status is PaymentStatus.FAILED
    assert await provider.acquirer.refunds() == []


async def test_a_refund_the_provider_refuses_fails_and_frees_the_amount(
    payments, refunds, store, refund_store
):
    payment = await paid(payments, card=REFUNDS_FAIL_CARD)
    command = refund_of(payment, Money(4_000, "EUR"))
    assert await refunds.handle(command) is Outcome.FAILED
    stored = await refund_store.get(command.refund_id)
    assert stored.status is RefundStatus.FAILED
    assert stored.error.code is ErrorCode.REFUND_FAILED
    view = await store.get_payment(payment.payment_request_id)
    assert (view.status, view.refund_reserved_minor, view.refundable_minor) == (
        PaymentStatus.SUCCEEDED,
        0,
        10_000,
    )


async def test_an_asynchronous_refund_stays_pending_until_reconciled(
    payments, refunds, store, refund_store, provider, metrics, engine
):
    payment = await paid(payments, card=REFUNDS_PENDING_CARD)
    command = refund_of(payment, Money(6_000, "EUR"))
    assert await refunds.handle(command) is Outcome.PENDING
    view = await store.get_payment(payment.payment_request_id)
    # Reserved while pending: a second refund may only take what is left.
    assert (view.refund_reserved_minor, view.refundable_minor) == (6_000, 4_000)
    too_much = refund_of(payment, Money(5_000, "EUR"))
    assert await refunds.handle(too_much) is Outcome.REFUSED

    reconciler = RefundReconciler(
        store=refund_store,
        handler=refunds,
        metrics=metrics,
        min_age=timedelta(0),
        clock=lambda: datetime.now(UTC) + timedelta(seconds=1),
    )
    for _ in range(50):
        await reconciler.run_once()
        if (await refund_store.get(command.refund_id)).status is RefundStatus.SUCCEEDED:
            break
        await asyncio.sleep(0.1)
    assert (await refund_store.get(command.refund_id)).status is RefundStatus.SUCCEEDED
    view = await store.get_payment(payment.payment_request_id)
    assert (view.status, view.refunded_minor, view.refund_reserved_minor) == (
        PaymentStatus.PARTIALLY_REFUNDED,
        6_000,
        0,
    )
    statuses = [e.status for e in await refund_events(engine, command.refund_id)]
    assert statuses == [RefundStatus.PENDING, RefundStatus.SUCCEEDED]


async def test_a_refund_reserved_before_a_crash_is_sent_once_on_redelivery(
    payments, refunds, refund_store, provider, clock
):
    payment = await paid(payments)
    command = refund_of(payment, Money(2_500, "EUR"))
    # The consumer reserved the refund, then died before calling the provider.
    begun = await refund_store.begin(command, RefundEvents(MESSAGES, "r").at(datetime.now(UTC)))
    assert isinstance(begun, RefundStarted)
    assert await provider.acquirer.refunds() == []
    # Its claim stands until it expires: until then a duplicate leaves the refund alone.
    assert await refunds.handle(command) is Outcome.OWNED_ELSEWHERE
    assert await provider.acquirer.refunds() == []
    clock.now += timedelta(seconds=31)
    assert await refunds.handle(command) is Outcome.SUCCEEDED
    assert await refunds.handle(command) is Outcome.REPLAYED
    assert [r.amount_minor for r in await provider.acquirer.refunds()] == [2_500]


async def test_a_refund_sent_before_a_crash_is_found_not_sent_again(
    payments, refunds, refund_store, provider, clock
):
    payment = await paid(payments)
    command = refund_of(payment, Money(2_500, "EUR"))
    begun = await refund_store.begin(command, RefundEvents(MESSAGES, "r").at(datetime.now(UTC)))
    assert isinstance(begun, RefundStarted)
    # The call reached the provider; the consumer died before recording the answer.
    await provider.refund(_request_for(begun))
    clock.now += timedelta(seconds=31)  # the dead consumer's claim has expired
    assert await refunds.handle(command) is Outcome.SUCCEEDED
    assert [r.amount_minor for r in await provider.acquirer.refunds()] == [2_500]


def _request_for(begun: RefundStarted) -> RefundRequest:
    refund = begun.refund
    assert refund.amount is not None
    return RefundRequest(
        refund_key=refund.refund_id,
        refund_id=refund.refund_id,
        payment_request_id=refund.payment_request_id,
        charge_reference=begun.charge_reference,
        amount=refund.amount,
        reason=refund.reason,
    )
