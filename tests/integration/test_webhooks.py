"""Webhooks on real databases (SQLite and PostgreSQL), to a real HTTP receiver.

Results are produced by the real payment and refund handlers (provider in process); their
deliveries are queued in the result's transaction and sent by the dispatcher, driven step
by step (``dispatch_once``) on a clock the test moves, so retries are checked without
waiting for them. The receiver verifies every request with the ``standardwebhooks``
library.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.capture_handler import CaptureCommandHandler
from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.refund_events import RefundEvents
from consumer.refund_handler import RefundCommandHandler
from domain.captures import CapturePayment
from domain.errors import ErrorCode
from domain.events import result_event_id
from domain.money import Money
from domain.payments import CreatePayment
from domain.refunds import RefundPayment
from domain.status import PaymentStatus
from domain.webhook_events import WebhookEvent, webhook_event_id
from domain.webhook_retry import RetryPolicy
from domain.webhook_views import DeliveryInfo
from persistence.database import Database
from persistence.tables import outbox
from persistence.webhook_fanout import delivery_row
from persistence.webhook_tables import webhook_deliveries
from producer.webhook_dispatcher import DeliveryQueue, WebhookDispatcher
from producer.webhook_sender import WebhookSender
from providers.registry import Providers
from providers.routing import Router
from providers.sandbox import InProcessSandboxProvider
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import ACCOUNT_KEY, DECLINED_CARD, SUCCESS_CARD, create_payment
from tests.support.clock import Clock
from tests.support.metric_samples import sample_sum as sample
from tests.support.webhook_receiver import WebhookReceiver, bound_socket
from tests.support.webhook_vault import with_sealed_secrets

pytestmark = pytest.mark.integration

CLIENT = "shop-1"
MESSAGES = PaymentMessages.bundled()
POLICY = RetryPolicy()


def no_jitter(low: float, high: float) -> float:
    return 1.0


@pytest.fixture
async def db(engine: AsyncEngine, clock: Clock) -> Database:
    return with_sealed_secrets(Database(engine, clock=clock))


@pytest.fixture
def sender_timeout_s() -> float:
    # Short: a receiver that does not answer in time is given up on soon.
    return 0.5


def dispatcher_over(
    queue: DeliveryQueue, sender: WebhookSender, metrics: Metrics, clock: Clock
) -> WebhookDispatcher:
    """A dispatcher of ``queue`` (the store's, or a test's stand-in) with the tests' retry
    policy and no jitter."""
    return WebhookDispatcher(queue, sender, metrics, policy=POLICY, clock=clock, uniform=no_jitter)


@pytest.fixture
def dispatcher(
    db: Database, sender: WebhookSender, metrics: Metrics, clock: Clock
) -> WebhookDispatcher:
    return dispatcher_over(db.webhooks, sender, metrics, clock)


@pytest.fixture
def payments(
    db: Database, provider: InProcessSandboxProvider, metrics: Metrics, clock: Clock
) -> PaymentCommandHandler:
    return PaymentCommandHandler(
        store=db.payments,
        providers=Providers.of(provider),
        router=Router.catch_all(provider.name),
        events=PaymentEvents(MESSAGES, "payments.results"),
        account_key=ACCOUNT_KEY,
        metrics=metrics,
        clock=clock,
    )


async def endpoint_for(db: Database, receiver: WebhookReceiver, events: list[str]) -> str:
    created = await db.webhooks.create_endpoint(CLIENT, receiver.url, events, "test")
    receiver.secret = created.secret
    return created.endpoint.id


def paid_by(client: str | None, payer_number: str = SUCCESS_CARD) -> CreatePayment:
    command = create_payment(payer_number=payer_number)
    return type(command).create(
        idempotency_key=command.idempotency_key,
        user_id=command.user_id,
        order_id=command.order_id,
        amount=command.amount,
        payment_method=command.payment_method,
        payer=command.payer,
        payee=command.payee,
        requested_at=command.requested_at,
        metadata=command.metadata,
        client_id=client,
    )


async def only_delivery(db: Database, endpoint_id: str) -> DeliveryInfo:
    [delivery] = await db.webhooks.deliveries(client_id=CLIENT, endpoint_id=endpoint_id)
    return delivery


async def test_a_result_is_queued_with_its_outbox_row_and_delivered_signed(
    db: Database,
    payments: PaymentCommandHandler,
    receiver: WebhookReceiver,
    dispatcher: WebhookDispatcher,
    engine: AsyncEngine,
    metrics: Metrics,
) -> None:
    endpoint_id = await endpoint_for(db, receiver, ["payment.succeeded", "payment.failed"])
    command = paid_by(CLIENT)
    await payments.handle(command)
    # Nothing for a payment without a client (an upstream service's) or of another client.
    await payments.handle(paid_by(None))
    await payments.handle(paid_by("shop-2"))
    async with engine.connect() as conn:
        queued = await conn.scalar(select(func.count()).select_from(webhook_deliveries))
        events = await conn.scalar(select(func.count()).select_from(outbox))
    assert (queued, events) == (1, 3)

    assert await dispatcher.dispatch_once() == 1

    [received] = receiver.received
    expected_id = webhook_event_id(
        result_event_id(command.payment_request_id, PaymentStatus.SUCCEEDED)
    )
    assert received.webhook_id == expected_id
    assert received.body["type"] == "payment.succeeded"
    assert received.body["data"]["paymentRequestId"] == command.payment_request_id
    assert (received.body["data"]["amount"], received.body["data"]["currency"]) == ("10.50", "EUR")
    assert receiver.refused == []
    delivery = await only_delivery(db, endpoint_id)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 1, 200)
    assert delivery.next_attempt_at is None
    assert sample(metrics, "paygate_webhook_attempts_total", result="delivered") == 1
    assert await dispatcher.dispatch_once() == 0


async def test_a_reused_key_with_other_parameters_sends_nothing(
    db: Database,
    engine: AsyncEngine,
    payments: PaymentCommandHandler,
    receiver: WebhookReceiver,
    dispatcher: WebhookDispatcher,
) -> None:
    """The conflict's result event (failed, idempotency_conflict) answers the command on
    Kafka; the payment it names succeeded, and its endpoint hears nothing else."""
    await endpoint_for(db, receiver, ["*"])
    command = paid_by(CLIENT)
    await payments.handle(command)
    conflicting = dataclasses.replace(command, amount=Money(999, "EUR"))
    await payments.handle(conflicting)
    async with engine.connect() as conn:
        events = [MESSAGES.decode_result(p) for p in await conn.scalars(select(outbox.c.payload))]
    assert [e.error.code for e in events if e.error is not None] == [ErrorCode.IDEMPOTENCY_CONFLICT]
    assert await dispatcher.dispatch_once() == 1
    assert [r.body["type"] for r in receiver.received] == ["payment.succeeded"]


async def test_only_the_subscribed_types_are_queued(
    db: Database,
    payments: PaymentCommandHandler,
    receiver: WebhookReceiver,
    dispatcher: WebhookDispatcher,
) -> None:
    await endpoint_for(db, receiver, ["payment.failed"])
    await payments.handle(paid_by(CLIENT))
    declined = paid_by(CLIENT, payer_number=DECLINED_CARD)
    await payments.handle(declined)
    assert await dispatcher.dispatch_once() == 1
    [received] = receiver.received
    assert received.body["type"] == "payment.failed"
    assert received.body["data"]["error"]["code"] == "payment_declined"


async def test_a_refund_result_is_delivered(
    db: Database,
    payments: PaymentCommandHandler,
    provider: InProcessSandboxProvider,
    receiver: WebhookReceiver,
    dispatcher: WebhookDispatcher,
    metrics: Metrics,
    clock: Clock,
) -> None:
    await endpoint_for(db, receiver, ["*"])
    command = paid_by(CLIENT)
    await payments.handle(command)
    refunds = RefundCommandHandler(
        store=db.refunds,
        providers=Providers.of(provider),
        events=RefundEvents(MESSAGES, "payments.results"),
        metrics=metrics,
        clock=clock,
    )
    await refunds.handle(
        RefundPayment.create(
            idempotency_key="refund-1",
            payment_request_id=command.payment_request_id,
            order_id=command.order_id,
            amount=Money(450, "EUR"),
            reason=None,
            requested_at=clock(),
            client_id=CLIENT,
        )
    )
    assert await dispatcher.dispatch_once() == 2
    types = sorted(r.body["type"] for r in receiver.received)
    assert types == ["payment.succeeded", "refund.succeeded"]
    refund = next(r.body["data"] for r in receiver.received if r.body["type"] == "refund.succeeded")
    assert (refund["amount"], refund["paymentStatus"], refund["paymentRefundedAmount"]) == (
        "4.50",
        "partially_refunded",
        "4.50",
    )


async def test_500s_are_retried_with_exponential_back_off(
    db: Database,
    payments: PaymentCommandHandler,
    receiver: WebhookReceiver,
    dispatcher: WebhookDispatcher,
    clock: Clock,
    metrics: Metrics,
) -> None:
    endpoint_id = await endpoint_for(db, receiver, ["*"])
    await payments.handle(paid_by(CLIENT))
    receiver.answers = [500, 503]
    assert await dispatcher.dispatch_once() == 1
    first = await only_delivery(db, endpoint_id)
    assert (first.status, first.attempts, first.last_status_code) == ("pending", 1, 500)
    assert first.next_attempt_at == clock() + POLICY.base
    assert await dispatcher.dispatch_once() == 0  # not due yet

    clock.now += POLICY.base
    assert await dispatcher.dispatch_once() == 1
    second = await only_delivery(db, endpoint_id)
    assert (second.attempts, second.last_status_code) == (2, 503)
    assert second.next_attempt_at == clock() + 2 * POLICY.base  # doubled

    clock.now += 2 * POLICY.base
    assert await dispatcher.dispatch_once() == 1
    done = await only_delivery(db, endpoint_id)
    assert (done.status, done.attempts, done.last_status_code) == ("delivered", 3, 200)
    assert len({r.webhook_id for r in receiver.received}) == 1  # one event, three attempts
    assert [r.status for r in receiver.received] == [500, 503, 200]
    assert sample(metrics, "paygate_webhook_attempts_total", result="failed") == 2


async def test_a_receiver_that_does_not_answer_in_time_is_tried_again(
    db: Database,
    payments: PaymentCommandHandler,
    receiver: WebhookReceiver,
    dispatcher: WebhookDispatcher,
    clock: Clock,
) -> None:
    endpoint_id = await endpoint_for(db, receiver, ["*"])
    await payments.handle(paid_by(CLIENT))
    receiver.hang = 1
    assert await dispatcher.dispatch_once() == 1
    timed_out = await only_delivery(db, endpoint_id)
    assert (timed_out.status, timed_out.last_status_code) == ("pending", None)
    assert timed_out.last_error is not None
    assert "no answer within" in timed_out.last_error

    clock.now += POLICY.base
    assert await dispatcher.dispatch_once() == 1
    assert (await only_delivery(db, endpoint_id)).status == "delivered"
    assert len(receiver.verified_ids()) == 1


async def test_a_receiver_down_for_a_while_gets_the_event_when_it_is_back(
    db: Database,
    payments: PaymentCommandHandler,
    dispatcher: WebhookDispatcher,
    clock: Clock,
) -> None:
    receiver = WebhookReceiver(sock=bound_socket())
    endpoint_id = await endpoint_for(db, receiver, ["*"])
    await payments.handle(paid_by(CLIENT))
    for _down in range(4):
        assert await dispatcher.dispatch_once() == 1
        down = await only_delivery(db, endpoint_id)
        assert down.status == "pending"
        assert down.last_error is not None
        assert "connection failed" in down.last_error
        assert down.next_attempt_at is not None
        clock.now = down.next_attempt_at
    await receiver.start()  # it listens on its port now: the receiver is back
    try:
        assert await dispatcher.dispatch_once() == 1
    finally:
        await receiver.stop()
    back = await only_delivery(db, endpoint_id)
    assert (back.status, back.attempts) == ("delivered", 5)
    assert len(receiver.verified_ids()) == 1


async def test_a_delivery_is_retried_for_a_day_then_marked_failed(
    db: Database,
    payments: PaymentCommandHandler,
    receiver: WebhookReceiver,
    dispatcher: WebhookDispatcher,
    clock: Clock,
    metrics: Metrics,
) -> None:
    endpoint_id = await endpoint_for(db, receiver, ["*"])
    await payments.handle(paid_by(CLIENT))
    created = (await only_delivery(db, endpoint_id)).created_at
    receiver.answers = [500] * 100
    for _attempt in range(100):
        assert await dispatcher.dispatch_once() == 1
        delivery = await only_delivery(db, endpoint_id)
        if delivery.next_attempt_at is None:
            break
        clock.now = delivery.next_attempt_at
    assert delivery.status == "failed"
    assert delivery.last_attempt_at is not None
    assert delivery.last_attempt_at - created >= timedelta(hours=24)
    assert 10 < delivery.attempts < 30
    assert sample(metrics, "paygate_webhook_attempts_total", result="gave_up") == 1
    assert await dispatcher.dispatch_once() == 0


async def test_a_delivery_can_be_sent_again_and_a_republished_result_is_not_queued_twice(
    db: Database,
    payments: PaymentCommandHandler,
    receiver: WebhookReceiver,
    dispatcher: WebhookDispatcher,
) -> None:
    endpoint_id = await endpoint_for(db, receiver, ["*"])
    command = paid_by(CLIENT)
    await payments.handle(command)
    assert await dispatcher.dispatch_once() == 1
    delivery = await only_delivery(db, endpoint_id)

    # The same result event written again (a replayed outcome re-published): same ids.
    view = await db.payments.get_payment(command.payment_request_id)
    assert view is not None
    await db.outbox.enqueue(PaymentEvents(MESSAGES, "payments.results").of_payment(view))
    assert await dispatcher.dispatch_once() == 0

    # Another client cannot re-send it; its owner can, through the endpoint or the CLI.
    assert await db.webhooks.retry(delivery.id, client_id="shop-2") is None
    again = await db.webhooks.retry(delivery.id, client_id=CLIENT, endpoint_id=endpoint_id)
    assert again is not None
    assert again.status == "pending"
    assert await dispatcher.dispatch_once() == 1
    assert receiver.verified_ids() == [delivery.event_id, delivery.event_id]
    assert (await only_delivery(db, endpoint_id)).attempts == 2


async def test_each_attempt_has_one_owner(
    engine: AsyncEngine,
    db: Database,
    payments: PaymentCommandHandler,
    receiver: WebhookReceiver,
    clock: Clock,
) -> None:
    await endpoint_for(db, receiver, ["*"])
    await payments.handle(paid_by(CLIENT))
    other = Database(engine, clock=clock)  # a second dispatcher's process
    lease = timedelta(seconds=30)
    [mine] = await db.webhooks.claim_due(10, per_endpoint=4, in_flight={}, lease=lease)
    assert await other.webhooks.claim_due(10, per_endpoint=4, in_flight={}, lease=lease) == []

    clock.now += lease  # the first owner stalled past its lease: another takes over
    [theirs] = await other.webhooks.claim_due(10, per_endpoint=4, in_flight={}, lease=lease)
    assert theirs.id == mine.id
    assert theirs.token != mine.token
    for claimed, store, recorded in ((mine, db, False), (theirs, other, True)):
        outcome = await store.webhooks.record_attempt(
            claimed, delivered=True, status_code=200, error=None, next_attempt_at=None
        )
        assert outcome is recorded


async def test_a_slow_endpoint_takes_at_most_its_share_of_the_places(
    db: Database, payments: PaymentCommandHandler, receiver: WebhookReceiver
) -> None:
    slow = await endpoint_for(db, receiver, ["*"])
    for _n in range(5):
        await payments.handle(paid_by(CLIENT))
    fast = (await db.webhooks.create_endpoint("shop-2", receiver.url, ["*"], None)).endpoint.id
    await payments.handle(paid_by("shop-2"))

    due = await db.webhooks.claim_due(
        4, per_endpoint=2, in_flight={slow: 1}, lease=timedelta(seconds=30)
    )
    assert sorted(d.endpoint_id for d in due) == sorted([slow, fast])


async def test_an_address_that_turned_private_is_refused_at_delivery(
    db: Database,
    payments: PaymentCommandHandler,
    metrics: Metrics,
    clock: Clock,
) -> None:
    """DNS rebinding: the host was public when registered, resolves to loopback now."""

    class Rebound(AbstractResolver):
        async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[ResolveResult]:
            return [
                ResolveResult(
                    hostname=host, host="127.0.0.1", port=port, family=2, proto=0, flags=0
                )
            ]

        async def close(self) -> None:
            pass

    created = await db.webhooks.create_endpoint(CLIENT, "https://hooks.example.com/in", ["*"], None)
    await payments.handle(paid_by(CLIENT))
    production = WebhookSender(development=False, timeout_s=0.5, resolver=Rebound())
    await production.start()
    try:
        dispatcher = WebhookDispatcher(
            db.webhooks, production, metrics, clock=clock, uniform=no_jitter
        )
        assert await dispatcher.dispatch_once() == 1
    finally:
        await production.stop()
    delivery = await only_delivery(db, created.endpoint.id)
    assert delivery.status == "pending"
    assert delivery.last_error is not None
    assert "loopback" in delivery.last_error
    assert sample(metrics, "paygate_webhook_attempts_total", result="refused_address") == 1


async def test_deleting_an_endpoint_fails_its_pending_deliveries(
    db: Database,
    payments: PaymentCommandHandler,
    receiver: WebhookReceiver,
    dispatcher: WebhookDispatcher,
) -> None:
    endpoint_id = await endpoint_for(db, receiver, ["*"])
    await payments.handle(paid_by(CLIENT))
    assert await db.webhooks.delete_endpoint("shop-2", endpoint_id) is False
    assert await db.webhooks.delete_endpoint(CLIENT, endpoint_id) is True
    assert await db.webhooks.endpoints(CLIENT) == []
    [failed] = await db.webhooks.deliveries(client_id=CLIENT)
    assert (failed.status, failed.last_error) == ("failed", "the endpoint was deleted")
    assert await dispatcher.dispatch_once() == 0
    # A new result of the client is not queued for the deleted endpoint.
    await payments.handle(paid_by(CLIENT))
    assert len(await db.webhooks.deliveries(client_id=CLIENT)) == 1
    assert receiver.received == []


async def test_a_delivery_queued_as_its_endpoint_was_deleted_is_failed_not_sent(
    db: Database,
    engine: AsyncEngine,
    receiver: WebhookReceiver,
    dispatcher: WebhookDispatcher,
    clock: Clock,
) -> None:
    endpoint_id = await endpoint_for(db, receiver, ["*"])
    assert await db.webhooks.delete_endpoint(CLIENT, endpoint_id) is True
    # What a result's transaction in another process writes when it read the endpoint
    # live before the delete committed (PostgreSQL's read committed lets both commit).
    event = WebhookEvent("evt_late", "payment.succeeded", "pay_1", '{"type":"x"}')
    async with engine.begin() as conn:
        await conn.execute(
            webhook_deliveries.insert().values(**delivery_row(endpoint_id, event, clock()))
        )
    assert await dispatcher.dispatch_once() == 0
    assert receiver.received == []
    [failed] = await db.webhooks.deliveries(client_id=CLIENT)
    assert (failed.event_id, failed.status, failed.last_error) == (
        "evt_late",
        "failed",
        "the endpoint was deleted",
    )
    assert await db.webhooks.backlog() == 0


async def test_a_capture_refused_for_another_amount_is_no_webhook(
    db: Database,
    payments: PaymentCommandHandler,
    receiver: WebhookReceiver,
    provider: InProcessSandboxProvider,
    metrics: Metrics,
    clock: Clock,
) -> None:
    # A payment is captured once: a capture of another amount afterwards is refused
    # (idempotency_conflict) and changes nothing. Before h5/conflictevent no such answer
    # was a webhook; after it, only events flagged refusal were skipped, and this one (it
    # carries the payment's status) became one more payment.succeeded webhook, under a new
    # webhook id for every re-send.
    endpoint_id = await endpoint_for(db, receiver, ["*"])
    captures = CaptureCommandHandler(
        store=db.captures,
        providers=Providers.of(provider),
        events=PaymentEvents(MESSAGES, "payments.results"),
        metrics=metrics,
    )
    command = dataclasses.replace(paid_by(CLIENT), capture=False)
    assert await payments.handle(command) is Outcome.AUTHORIZED
    capture = CapturePayment.create(
        payment_request_id=command.payment_request_id,
        order_id=command.order_id,
        requested_at=clock(),
        client_id=CLIENT,
    )
    assert await captures.handle(capture) is Outcome.SUCCEEDED
    before = sorted(d.event_id for d in await db.webhooks.deliveries(client_id=CLIENT))
    assert len(before) == 2  # payment.authorized, payment.succeeded

    other = dataclasses.replace(capture, amount=Decimal("1.00"))
    assert await captures.handle(other) is Outcome.REFUSED

    after = await db.webhooks.deliveries(client_id=CLIENT, endpoint_id=endpoint_id)
    assert sorted(d.event_id for d in after) == before


class _DeletedAfterTheClaim:
    """The delivery queue, with the endpoint deleted (its DELETE answered) right after a
    dispatcher claimed its delivery, while the attempt waits its turn to be signed."""

    def __init__(self, db: Database, endpoint_id: str) -> None:
        self._queue = db.webhooks
        self._endpoint_id = endpoint_id

    async def claim_due(self, limit, **options):
        due = await self._queue.claim_due(limit, **options)
        assert await self._queue.delete_endpoint(CLIENT, self._endpoint_id) is True
        return due

    async def record_attempt(self, delivery, **outcome):
        return await self._queue.record_attempt(delivery, **outcome)

    async def secret_of(self, delivery):
        return await self._queue.secret_of(delivery)


async def test_a_delivery_claimed_before_its_endpoint_was_deleted_is_not_signed_after(
    db: Database,
    payments: PaymentCommandHandler,
    receiver: WebhookReceiver,
    sender: WebhookSender,
    metrics: Metrics,
    clock: Clock,
) -> None:
    # Before: the attempt signed with the secret its claim had read, and the deleted
    # endpoint received a signed delivery after its DELETE had answered.
    endpoint_id = await endpoint_for(db, receiver, ["*"])
    await payments.handle(paid_by(CLIENT))
    dispatcher = dispatcher_over(_DeletedAfterTheClaim(db, endpoint_id), sender, metrics, clock)

    assert await dispatcher.dispatch_once() == 1  # claimed, then not sent

    assert receiver.received == []
    [failed] = await db.webhooks.deliveries(client_id=CLIENT)
    assert (failed.status, failed.last_error) == ("failed", "the endpoint was deleted")


async def pruned(db: Database, finished_before: datetime) -> int:
    """What the pruning deletes in passes until it deletes nothing. A pass skips rows another
    transaction holds (``SKIP LOCKED``, left to the next pass), so one pass's count says
    nothing on PostgreSQL while anything else touches the table; the passes are bounded."""
    total = 0
    for _ in range(20):
        deleted = await db.webhooks.prune(finished_before)
        total += deleted
        if deleted == 0 and total:
            break
        await asyncio.sleep(0.05)
    return total


async def test_finished_deliveries_are_pruned_after_the_retention_and_pending_ones_never(
    db: Database,
    payments: PaymentCommandHandler,
    receiver: WebhookReceiver,
    dispatcher: WebhookDispatcher,
    clock: Clock,
) -> None:
    endpoint_id = await endpoint_for(db, receiver, ["*"])
    await payments.handle(paid_by(CLIENT))
    assert await dispatcher.dispatch_once() == 1
    receiver.answers = [500]
    await payments.handle(paid_by(CLIENT, payer_number=DECLINED_CARD))
    assert await dispatcher.dispatch_once() == 1
    clock.now += timedelta(days=31)
    assert await pruned(db, clock() - timedelta(days=30)) == 1
    [left] = await db.webhooks.deliveries(client_id=CLIENT, endpoint_id=endpoint_id)
    assert (left.status, left.event_type) == ("pending", "payment.failed")
