"""Routing and failover on SQLite and PostgreSQL: a failover happens only when the failed
call certainly did not charge, every attempt is recorded, and an in-doubt attempt is only
ever asked of its own provider."""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest
from sqlalchemy import select

from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.payment_reconciler import PaymentReconciler
from domain.errors import ErrorCode
from domain.money import Money
from domain.retry import RetryPolicy
from domain.status import PaymentStatus
from persistence.payment_begin import Started
from persistence.tables import outbox, payments, provider_attempts
from providers.registry import Providers
from providers.routing import Router
from providers.sandbox import InProcessSandboxProvider, SandboxConfig, SandboxHttpProvider
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import (
    ACCOUNT_KEY,
    DECLINED_CARD,
    TIMEOUT_CARD,
    UNAVAILABLE_CARD,
    create_payment,
    unexpected_refusal,
)

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()
EVENTS = PaymentEvents(MESSAGES, "payments.results")
PRIMARY, SECONDARY = "sandbox", "sandbox-2"


def _closed_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def down_primary():
    """The sandbox over HTTP at a loopback port nobody listens on: connection refused."""
    provider = SandboxHttpProvider(
        f"http://127.0.0.1:{_closed_loopback_port()}", timeout_s=2.0, name=PRIMARY
    )
    await provider.start()
    yield provider
    await provider.stop()


@pytest.fixture
async def primary():
    provider = InProcessSandboxProvider(
        config=SandboxConfig(hang_s=0.3), call_timeout_s=0.05, name=PRIMARY
    )
    await provider.start()
    yield provider
    await provider.stop()


@pytest.fixture
async def secondary():
    provider = InProcessSandboxProvider(
        config=SandboxConfig(hang_s=0.3), call_timeout_s=0.05, name=SECONDARY
    )
    await provider.start()
    yield provider
    await provider.stop()


def handler_for(store, first, second, metrics, clock):
    return PaymentCommandHandler(
        store=store,
        providers=Providers.of(first, second),
        router=Router({"card:EUR": [PRIMARY, SECONDARY], "*": [SECONDARY]}),
        events=EVENTS,
        account_key=ACCOUNT_KEY,
        metrics=metrics,
        # One pass over the route, no retries: these tests are about failover alone.
        retry_policy=RetryPolicy(max_attempts=2, base_delay_s=0.01, max_delay_s=0.01),
        clock=clock,
    )


def reconciler_for(store, first, second, clock):
    return PaymentReconciler(
        store=store,
        handler=handler_for(store, first, second, Metrics(), clock),
        metrics=Metrics(),
        min_age=timedelta(seconds=30),
        clock=clock,
    )


async def _attempts(engine, command):
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(provider_attempts)
            .where(provider_attempts.c.payment_id == command.payment_request_id)
            .order_by(provider_attempts.c.attempt_no)
        )
        return [(r.attempt_key, r.provider, r.status, r.finished_at is not None) for r in rows]


async def _events(engine, command):
    async with engine.connect() as conn:
        payloads = (await conn.execute(select(outbox.c.payload))).scalars().all()
    events = [MESSAGES.decode_result(p) for p in payloads]
    return [e for e in events if e.payment_request_id == command.payment_request_id]


def _failovers(metrics, source=PRIMARY, target=SECONDARY):
    return metrics.provider_failovers.labels(source, target)._value.get()


async def test_primary_down_the_secondary_charges_once(
    store, engine, metrics, clock, down_primary, secondary
):
    handler = handler_for(store, down_primary, secondary, metrics, clock)
    command = create_payment()
    assert await handler.handle(command) is Outcome.SUCCEEDED

    payment = await store.get_payment(command.payment_request_id)
    assert payment.status is PaymentStatus.SUCCEEDED
    assert payment.provider == SECONDARY
    a1, a2 = f"{command.payment_request_id}-a1", f"{command.payment_request_id}-a2"
    assert await _attempts(engine, command) == [
        (a1, PRIMARY, "failed", True),
        (a2, SECONDARY, "succeeded", True),
    ]
    (charge,) = await secondary.acquirer.charges()
    assert charge.idempotency_key == a2
    (event,) = await _events(engine, command)
    assert (event.status, event.provider) == (PaymentStatus.SUCCEEDED, SECONDARY)
    assert _failovers(metrics) == 1

    # A redelivery replays; nothing is charged again, nothing fails over again.
    assert await handler.handle(command) is Outcome.REPLAYED
    assert len(await secondary.acquirer.charges()) == 1
    assert _failovers(metrics) == 1


async def test_primary_timeout_no_failover_and_the_reconciler_asks_the_primary(
    store, engine, metrics, clock, primary, secondary
):
    handler = handler_for(store, primary, secondary, metrics, clock)
    command = create_payment(payer_number=TIMEOUT_CARD)
    assert await handler.handle(command) is Outcome.PENDING

    payment = await store.get_payment(command.payment_request_id)
    assert payment.status is PaymentStatus.PENDING
    assert payment.error.code is ErrorCode.PROVIDER_TIMEOUT
    assert payment.provider == PRIMARY
    a1 = f"{command.payment_request_id}-a1"
    assert await _attempts(engine, command) == [(a1, PRIMARY, "unknown", False)]
    assert await secondary.acquirer.charges() == []  # never called
    assert _failovers(metrics) == 0

    clock.now += timedelta(seconds=31)
    report = await reconciler_for(store, primary, secondary, clock).run_once()
    assert (report.checked, report.resolved) == (1, 1)
    payment = await store.get_payment(command.payment_request_id)
    assert payment.status is PaymentStatus.SUCCEEDED
    assert await _attempts(engine, command) == [(a1, PRIMARY, "succeeded", True)]
    (charge,) = await primary.acquirer.charges()
    assert charge.idempotency_key == a1
    assert await secondary.acquirer.charges() == []
    events = await _events(engine, command)
    assert [(e.status, e.provider) for e in events] == [
        (PaymentStatus.PENDING, PRIMARY),
        (PaymentStatus.SUCCEEDED, PRIMARY),
    ]


async def test_a_timeout_after_failover_is_reconciled_with_the_secondary(
    store, engine, metrics, clock, down_primary, secondary
):
    handler = handler_for(store, down_primary, secondary, metrics, clock)
    command = create_payment(payer_number=TIMEOUT_CARD)
    assert await handler.handle(command) is Outcome.PENDING
    a2 = f"{command.payment_request_id}-a2"
    assert (await _attempts(engine, command))[1] == (a2, SECONDARY, "unknown", False)

    # Asking the (unreachable) primary could only leave it pending: it must ask the secondary.
    clock.now += timedelta(seconds=31)
    report = await reconciler_for(store, down_primary, secondary, clock).run_once()
    assert (report.checked, report.resolved) == (1, 1)
    payment = await store.get_payment(command.payment_request_id)
    assert (payment.status, payment.provider) == (PaymentStatus.SUCCEEDED, SECONDARY)
    assert len(await secondary.acquirer.charges()) == 1


async def test_a_decline_is_never_failed_over(store, engine, metrics, clock, primary, secondary):
    handler = handler_for(store, primary, secondary, metrics, clock)
    command = create_payment(payer_number=DECLINED_CARD)
    assert await handler.handle(command) is Outcome.FAILED
    payment = await store.get_payment(command.payment_request_id)
    assert (payment.error.code, payment.provider) == (ErrorCode.PAYMENT_DECLINED, PRIMARY)
    assert [a[1:] for a in await _attempts(engine, command)] == [(PRIMARY, "declined", True)]
    assert await secondary.acquirer.charges() == []
    assert _failovers(metrics) == 0


async def test_the_last_provider_unavailable_fails_the_payment(
    store, engine, metrics, clock, down_primary, secondary
):
    handler = handler_for(store, down_primary, secondary, metrics, clock)
    command = create_payment(payer_number=UNAVAILABLE_CARD)
    assert await handler.handle(command) is Outcome.FAILED
    payment = await store.get_payment(command.payment_request_id)
    assert (payment.status, payment.provider) == (PaymentStatus.FAILED, SECONDARY)
    assert payment.error.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert [a[1:] for a in await _attempts(engine, command)] == [
        (PRIMARY, "failed", True),
        (SECONDARY, "failed", True),
    ]
    assert await secondary.acquirer.charges() == []
    assert _failovers(metrics) == 1


async def test_other_routes_use_their_own_providers(
    store, engine, metrics, clock, primary, secondary
):
    handler = handler_for(store, primary, secondary, metrics, clock)
    command = create_payment(amount=Money(500, "USD"))  # "*": the secondary only
    assert await handler.handle(command) is Outcome.SUCCEEDED
    assert (await store.get_payment(command.payment_request_id)).provider == SECONDARY
    assert await primary.acquirer.charges() == []


async def test_a_crash_after_the_failover_write_ahead_resumes_with_the_secondary(
    store, engine, metrics, clock, down_primary, secondary
):
    command = create_payment()
    # A consumer that failed over (write-ahead committed) and died before calling sandbox-2.
    started = await store.begin(
        command, provider=PRIMARY, account_key=ACCOUNT_KEY, refusal_event=unexpected_refusal
    )
    assert isinstance(started, Started)
    a2 = await store.next_attempt(
        command.payment_request_id, started.attempt_key, SECONDARY, claim=started.claim.token
    )
    assert a2 == f"{command.payment_request_id}-a2"
    assert (await store.get_payment(command.payment_request_id)).provider == SECONDARY

    handler = handler_for(store, down_primary, secondary, metrics, clock)
    # While the dead consumer's claim lasts, the payment is still its own.
    assert await handler.handle(command) is Outcome.OWNED_ELSEWHERE
    assert await secondary.acquirer.charges() == []
    clock.now += timedelta(seconds=31)
    assert await handler.handle(command) is Outcome.SUCCEEDED
    (charge,) = await secondary.acquirer.charges()
    assert charge.idempotency_key == a2
    assert [a[1:] for a in await _attempts(engine, command)] == [
        (PRIMARY, "failed", True),
        (SECONDARY, "succeeded", True),
    ]


async def test_next_attempt_is_refused_unless_the_attempt_is_the_open_latest_one(
    store, engine, clock
):
    command = create_payment()
    started = await store.begin(
        command, provider=PRIMARY, account_key=ACCOUNT_KEY, refusal_event=unexpected_refusal
    )
    pid = command.payment_request_id
    token = started.claim.token
    # Only the claim's holder may open the next attempt.
    assert await store.next_attempt(pid, started.attempt_key, SECONDARY, claim="other") is None
    assert await store.next_attempt(pid, started.attempt_key, SECONDARY, claim=token) == f"{pid}-a2"
    # a1 is closed now: a second failover from it (a duplicate handler) changes nothing.
    assert await store.next_attempt(pid, started.attempt_key, SECONDARY, claim=token) is None
    assert len(await _attempts(engine, command)) == 2

    # Once the payment is no longer processing, no attempt may be opened.
    other = create_payment()
    begun = await store.begin(
        other, provider=PRIMARY, account_key=ACCOUNT_KEY, refusal_event=unexpected_refusal
    )
    async with engine.begin() as conn:
        await conn.execute(
            payments.update()
            .where(payments.c.id == other.payment_request_id)
            .values(status=PaymentStatus.PENDING.value)
        )
    assert (
        await store.next_attempt(
            other.payment_request_id, begun.attempt_key, SECONDARY, claim=begun.claim.token
        )
        is None
    )
    assert [a[1:] for a in await _attempts(engine, other)] == [(PRIMARY, "started", False)]
