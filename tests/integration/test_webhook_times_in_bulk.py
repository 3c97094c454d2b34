"""Each webhook delivery a bulk write queues carries its own operation's time, on SQLite and
PostgreSQL (persistence.webhook_fanout).

Two operations of one kind are started together (``asyncio.gather``), each at its own
moment on the test's clock, so they land in one writer-queue batch and take the bulk path
of their module: payment begins (refused: order already paid) and finishes, refund begins
(refused: more than captured) and finishes, capture begins (refused: not authorized) and
finishes. Each delivery's ``created_at`` and first ``next_attempt_at`` must be its own
operation's moment, as its result event's outbox row is: a delivery is what a client's
delivery listing shows and what the dispatcher sends in order. Before, every delivery of a
batch took the batch's first operation's time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.captures import CapturePayment
from domain.errors import ErrorCode
from domain.money import Money
from domain.payments import CreatePayment
from domain.refunds import RefundPayment, RefundStatus
from domain.status import PaymentStatus
from domain.webhook_events import WebhookEvent
from persistence.attempts import ATTEMPT_SUCCEEDED
from persistence.capture_store import CaptureStore
from persistence.engine import as_utc
from persistence.follow_up import FollowUpRefused, FollowUpStarted
from persistence.outbox import OutboxMessage
from persistence.payment_begin import Refused, Started
from persistence.payment_store import PaymentStore
from persistence.refund_store import RefundRefused, RefundStarted, RefundStore
from persistence.tables import outbox
from persistence.webhook_tables import webhook_deliveries, webhook_endpoints
from tests.support.builders import ACCOUNT_KEY, create_payment, unexpected_refusal, unique
from tests.support.clock import Clock

pytestmark = pytest.mark.integration

CLIENT = "acme"
AMOUNT = Money(10_000, "EUR")
# The two operations of a batch arrive this far apart.
APART = timedelta(seconds=7)


def _message(payment_id: str, key: str) -> OutboxMessage:
    """A result event with a webhook for the endpoints of the payment's client; the webhook
    has the event's id, so a delivery names the outbox row it goes with."""
    event_id = str(uuid.uuid4())
    return OutboxMessage(
        event_id=event_id,
        topic="payments.results",
        key=key,
        payload=b"{}",
        webhook=WebhookEvent(event_id, "payment.test", payment_id, body="{}"),
    )


async def _at(clock: Clock, moment: datetime, call: Callable[[], Awaitable[Any]]) -> Any:
    """``call`` made at ``moment``: the store reads its clock before it first waits, so
    operations started together each keep the moment they were started at."""
    clock.now = moment
    return await call()


async def _two_at_once(clock: Clock, first: Callable, second: Callable) -> list[Any]:
    start = clock.now + timedelta(minutes=1)
    return list(await asyncio.gather(_at(clock, start, first), _at(clock, start + APART, second)))


async def _times_by_event(engine: AsyncEngine) -> dict[str, tuple[datetime, ...]]:
    """Per result event with a delivery: its outbox row's time, then its delivery's
    ``created_at`` and ``next_attempt_at``."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(
                outbox.c.event_id,
                outbox.c.created_at,
                webhook_deliveries.c.created_at.label("queued_at"),
                webhook_deliveries.c.next_attempt_at,
            ).join(webhook_deliveries, webhook_deliveries.c.event_id == outbox.c.event_id)
        )
        return {
            row.event_id: (
                as_utc(row.created_at),
                as_utc(row.queued_at),
                as_utc(row.next_attempt_at),
            )
            for row in rows
        }


async def _assert_each_delivery_at_its_operations_time(engine: AsyncEngine) -> None:
    times = await _times_by_event(engine)
    assert len(times) == 2, times
    assert len({outboxed for outboxed, _, _ in times.values()}) == 2, "one time for both"
    for event_id, (outboxed, queued, first_try) in times.items():
        assert (queued, first_try) == (outboxed, outboxed), event_id


@pytest.fixture
async def endpoint(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            insert(webhook_endpoints).values(
                id=unique("we"),
                client_id=CLIENT,
                url="https://hooks.example/in",
                enabled_events=["*"],
                secret_key_id="dk_x",
                secret_ciphertext=b"x",
                created_at=datetime.now().astimezone(),
            )
        )


def _clients(command: CreatePayment, *, capture: bool = True) -> CreatePayment:
    return dataclasses.replace(command, client_id=CLIENT, capture=capture)


async def _begun(store: PaymentStore, command: CreatePayment) -> Started:
    begun = await store.begin(
        command, provider="sandbox", account_key=ACCOUNT_KEY, refusal_event=unexpected_refusal
    )
    assert isinstance(begun, Started)
    return begun


async def _paid(store: PaymentStore, *, capture: bool = True) -> CreatePayment:
    """A payment of the client's, succeeded (``capture``) or authorized, with no webhook."""
    command = _clients(create_payment(amount=AMOUNT), capture=capture)
    begun = await _begun(store, command)
    assert await store.finish(
        command.payment_request_id,
        begun.attempt_key,
        claim=begun.claim.token,
        status=PaymentStatus.SUCCEEDED if capture else PaymentStatus.AUTHORIZED,
        attempt_status=ATTEMPT_SUCCEEDED,
        provider_reference=unique("ch"),
        error=None,
        event=OutboxMessage(unique("evt"), "payments.results", command.order_id, b""),
    )
    return command


async def test_payment_begins_refused_in_one_batch(
    engine: AsyncEngine, endpoint: None, store: PaymentStore, clock: Clock
):
    orders = [(await _paid(store)).order_id for _ in range(2)]
    commands = [_clients(create_payment(amount=AMOUNT, order_id=o)) for o in orders]

    def refused(command: CreatePayment, error: Any, _at: datetime) -> OutboxMessage:
        assert error.code is ErrorCode.ORDER_ALREADY_PAID
        return _message(command.payment_request_id, command.order_id)

    def begin(command: CreatePayment) -> Callable[[], Awaitable[Any]]:
        return lambda: store.begin(
            command, provider="sandbox", account_key=ACCOUNT_KEY, refusal_event=refused
        )

    answers = await _two_at_once(clock, begin(commands[0]), begin(commands[1]))

    assert all(isinstance(answer, Refused) for answer in answers)
    await _assert_each_delivery_at_its_operations_time(engine)


async def test_payment_finishes_in_one_batch(
    engine: AsyncEngine, endpoint: None, store: PaymentStore, clock: Clock
):
    commands = [_clients(create_payment(amount=AMOUNT)) for _ in range(2)]
    begun = [await _begun(store, command) for command in commands]

    def finish(command: CreatePayment, started: Started) -> Callable[[], Awaitable[bool]]:
        return lambda: store.finish(
            command.payment_request_id,
            started.attempt_key,
            claim=started.claim.token,
            status=PaymentStatus.SUCCEEDED,
            attempt_status=ATTEMPT_SUCCEEDED,
            provider_reference=unique("ch"),
            error=None,
            event=_message(command.payment_request_id, command.order_id),
        )

    done = await _two_at_once(clock, finish(commands[0], begun[0]), finish(commands[1], begun[1]))

    assert done == [True, True]
    await _assert_each_delivery_at_its_operations_time(engine)


def _refund_of(payment: CreatePayment, amount: Money) -> RefundPayment:
    return RefundPayment.create(
        idempotency_key=unique("refund-key"),
        payment_request_id=payment.payment_request_id,
        order_id=payment.order_id,
        amount=amount,
        reason="requested_by_customer",
        requested_at=datetime.now().astimezone(),
        client_id=CLIENT,
    )


def _refund_event(view: Any, _standing: Any) -> OutboxMessage:
    return _message(view.payment_request_id, view.payment_request_id)


def _no_webhook(view: Any, _standing: Any) -> OutboxMessage:
    return OutboxMessage(unique("evt"), "payments.results", view.payment_request_id, b"")


async def test_refund_begins_refused_in_one_batch(
    engine: AsyncEngine, endpoint: None, store: PaymentStore, clock: Clock
):
    refunds = RefundStore(engine, store.writes, clock)
    paid = [await _paid(store) for _ in range(2)]
    too_much = Money(AMOUNT.minor_units + 1, AMOUNT.currency)

    def begin(payment: CreatePayment) -> Callable[[], Awaitable[Any]]:
        return lambda: refunds.begin(_refund_of(payment, too_much), _refund_event)

    answers = await _two_at_once(clock, begin(paid[0]), begin(paid[1]))

    assert all(isinstance(answer, RefundRefused) for answer in answers)
    assert {answer.error.code for answer in answers} == {ErrorCode.REFUND_EXCEEDS_CAPTURED}
    await _assert_each_delivery_at_its_operations_time(engine)


async def test_refund_finishes_in_one_batch(
    engine: AsyncEngine, endpoint: None, store: PaymentStore, clock: Clock
):
    refunds = RefundStore(engine, store.writes, clock)
    begun = []
    for _ in range(2):
        started = await refunds.begin(_refund_of(await _paid(store), AMOUNT), _no_webhook)
        assert isinstance(started, RefundStarted)
        begun.append(started)

    def finish(started: RefundStarted) -> Callable[[], Awaitable[bool]]:
        return lambda: refunds.finish(
            started.refund.refund_id,
            claim=started.claim.token,
            status=RefundStatus.SUCCEEDED,
            provider_reference=unique("re"),
            error=None,
            event=_refund_event,
        )

    done = await _two_at_once(clock, finish(begun[0]), finish(begun[1]))

    assert done == [True, True]
    await _assert_each_delivery_at_its_operations_time(engine)


def _capture(payment: CreatePayment, amount: Decimal | None = None) -> CapturePayment:
    return dataclasses.replace(
        CapturePayment.create(
            payment_request_id=payment.payment_request_id,
            order_id=payment.order_id,
            requested_at=datetime.now().astimezone(),
            amount=amount,
        ),
        client_id=CLIENT,
    )


def _capture_event(payment: Any) -> OutboxMessage:
    return _message(payment.payment_request_id, payment.order_id)


def _capture_refused(payment: Any, _error: Any) -> OutboxMessage:
    return _message(payment.payment_request_id, payment.order_id)


async def test_capture_begins_refused_in_one_batch(
    engine: AsyncEngine, endpoint: None, store: PaymentStore, clock: Clock
):
    captures = CaptureStore(engine, store.writes, clock)
    authorized = [await _paid(store, capture=False) for _ in range(2)]
    # More than is held: refused, with a result event.
    too_much = AMOUNT.to_decimal() + Decimal("0.01")

    def begin(payment: CreatePayment) -> Callable[[], Awaitable[Any]]:
        return lambda: captures.begin(_capture(payment, too_much), _capture_refused)

    answers = await _two_at_once(clock, begin(authorized[0]), begin(authorized[1]))

    assert all(isinstance(answer, FollowUpRefused) for answer in answers)
    assert {answer.error.code for answer in answers} == {ErrorCode.CAPTURE_EXCEEDS_AUTHORIZED}
    await _assert_each_delivery_at_its_operations_time(engine)


async def test_capture_finishes_in_one_batch(
    engine: AsyncEngine, endpoint: None, store: PaymentStore, clock: Clock
):
    captures = CaptureStore(engine, store.writes, clock)
    begun = []
    for _ in range(2):
        started = await captures.begin(
            _capture(await _paid(store, capture=False)), _capture_refused
        )
        assert isinstance(started, FollowUpStarted)
        begun.append(started)

    def finish(started: FollowUpStarted) -> Callable[[], Awaitable[bool]]:
        return lambda: captures.finish(
            started.payment.payment_request_id,
            claim=started.claim.token,
            captured=True,
            error=None,
            event=_capture_event,
        )

    done = await _two_at_once(clock, finish(begun[0]), finish(begun[1]))

    assert done == [True, True]
    await _assert_each_delivery_at_its_operations_time(engine)
