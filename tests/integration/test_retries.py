"""Transient provider failures are retried with back-off, and the schedule survives a crash."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from domain.errors import ErrorCode
from domain.retry import RetryPolicy
from domain.status import PaymentStatus
from persistence.payment_store import PaymentStore
from persistence.tables import provider_attempts
from providers.registry import Providers
from providers.routing import Router
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import create_payment
from tests.support.flaky_provider import FlakyProvider

pytestmark = pytest.mark.integration

EVENTS = PaymentEvents(PaymentMessages.bundled(), "results")
FAST = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.02)


def handler_for(store, provider, metrics, policy=FAST):
    return PaymentCommandHandler(
        store=store,
        providers=Providers.of(provider),
        router=Router.catch_all(provider.name),
        events=EVENTS,
        account_key=b"key",
        metrics=metrics,
        retry_policy=policy,
    )


async def _attempt_statuses(engine, command) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(provider_attempts.c.status)
            .where(provider_attempts.c.payment_id == command.payment_request_id)
            .order_by(provider_attempts.c.attempt_no)
        )
        return list(rows.scalars())


async def test_transient_failures_then_success_charge_once(engine):
    store, provider, metrics = PaymentStore(engine), FlakyProvider(failures=2), Metrics()
    command = create_payment()
    assert await handler_for(store, provider, metrics).handle(command) is Outcome.SUCCEEDED
    # One attempt, retried with its own key: the provider's idempotency fences every copy.
    assert await _attempt_statuses(engine, command) == ["succeeded"]
    assert provider.calls == [f"{command.payment_request_id}-a1"] * 3
    assert provider.charges == 1
    assert metrics.provider_retries.labels("sandbox")._value.get() == 2
    payment = await store.get_payment(command.payment_request_id)
    assert payment is not None
    assert payment.next_retry_at is None  # cleared once final


async def test_retries_exhausted_fail_the_payment_as_provider_unavailable(engine):
    store, provider = PaymentStore(engine), FlakyProvider(failures=10)
    command = create_payment()
    assert await handler_for(store, provider, Metrics()).handle(command) is Outcome.FAILED
    payment = await store.get_payment(command.payment_request_id)
    assert payment is not None
    assert payment.error is not None
    assert payment.error.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert await _attempt_statuses(engine, command) == ["failed"]
    assert provider.calls == [f"{command.payment_request_id}-a1"] * 4
    assert provider.charges == 0


async def test_retry_after_is_kept_to(engine):
    store, provider = PaymentStore(engine), FlakyProvider(failures=1, retry_after_s=0.3)
    command = create_payment()
    handler = handler_for(store, provider, Metrics())
    before = datetime.now(UTC)
    task = asyncio.create_task(handler.handle(command))
    scheduled = None
    for _ in range(200):
        payment = await store.get_payment(command.payment_request_id)
        if payment is not None and payment.next_retry_at is not None:
            scheduled = payment.next_retry_at
            break
        await asyncio.sleep(0.01)
    assert scheduled is not None
    assert scheduled - before >= timedelta(seconds=0.3)
    assert await task is Outcome.SUCCEEDED


async def test_the_schedule_survives_a_consumer_that_dies_while_waiting(engine):
    store, provider = PaymentStore(engine), FlakyProvider(failures=1)
    command = create_payment()
    slow = RetryPolicy(max_attempts=4, base_delay_s=0.4, max_delay_s=0.4)
    first = asyncio.create_task(handler_for(store, provider, Metrics(), slow).handle(command))
    for _ in range(200):
        payment = await store.get_payment(command.payment_request_id)
        if payment is not None and payment.next_retry_at is not None:
            break
        await asyncio.sleep(0.01)
    first.cancel()  # the consumer dies during the back-off
    with pytest.raises(asyncio.CancelledError):
        await first
    stored = await store.get_payment(command.payment_request_id)
    assert stored is not None
    scheduled = stored.next_retry_at
    assert scheduled is not None

    # The redelivery finds the open attempt and the schedule, waits for it, then retries.
    outcome = await handler_for(store, provider, Metrics(), slow).handle(command)
    assert outcome is Outcome.SUCCEEDED
    assert datetime.now(UTC) >= scheduled
    assert provider.charges == 1
    payment = await store.get_payment(command.payment_request_id)
    assert payment is not None
    assert payment.status is PaymentStatus.SUCCEEDED
