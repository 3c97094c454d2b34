"""A replayed refund is answered with its payment's refund totals as they are now.

Found by review: the refund handler's replay read the payment's standing (``paymentStatus``,
``paymentRefundedMinor``) without a lock and queued the event in a transaction of its own.
Another refund of the payment that settled in between had its event (refunded 80.00)
queued first, and the replay's (refunded 30.00) after it: a reader keeping the last totals
per payment saw them go back. The replay now reads the refund and the standing under the
payment's row lock (the lock refunds settle under) in the transaction that queues the event.

The schedules, deterministic on both databases:

* another worker settles a refund at the moment the replay is about to queue its event
  (the regression: it failed on the old code, whose event said 30.00 after 80.00);
* another worker asks to settle a refund while the replay holds the lock (from inside the
  replay's event building): it waits, and its event follows the replay's;
* another worker tries to settle a refund at the moment a pending outcome of another
  (which moves no total) reads the totals: it cannot, and settles after; on the old code
  (PostgreSQL) it settled in between and the pending event, with older totals, came after.

The second pins the order the lock gives; it passes on the old code too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import event, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.util import await_only

from consumer.outcome import Outcome
from consumer.refund_events import RefundEvents
from consumer.refund_handler import RefundCommandHandler
from domain.events import RefundResult
from domain.money import Money
from domain.refund_view import RefundView
from domain.refunds import RefundPayment, RefundStatus
from domain.status import PaymentStatus
from persistence.engine import create_engine
from persistence.group_commit import GroupCommit
from persistence.outbox import OutboxMessage
from persistence.refund_store import PaymentRefunds, RefundEventBuilder, RefundStarted, RefundStore
from persistence.tables import outbox
from providers.registry import Providers
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import SUCCESS_CARD, create_payment, unique

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()
EVENTS = RefundEvents(MESSAGES, "payments.results")


class MeanwhileAtReplay(RefundStore):
    """The real store; the first replay it is asked to queue first lets ``meanwhile`` run
    (another worker's refund, to its end): on the old code, after the replay read the
    standing (its ``enqueue``); on the new, as the replay's transaction is asked for."""

    meanwhile: Callable[[], Awaitable[None]] | None = None

    async def _run_meanwhile(self) -> None:
        meanwhile, self.meanwhile = self.meanwhile, None
        if meanwhile is not None:
            await meanwhile()

    async def enqueue(self, message: OutboxMessage) -> None:
        await self._run_meanwhile()
        await super().enqueue(message)

    async def republish(
        self, refund_id: str, event: RefundEventBuilder, *, final_only: bool = False
    ) -> RefundView | None:
        await self._run_meanwhile()
        return await super().republish(refund_id, event, final_only=final_only)


class StartsWhileBuilding(RefundEvents):
    """Starts ``work`` (another worker's write) when the event of ``refund_id`` is built
    for the ``nth`` time: inside the transaction that builds it, under its locks."""

    def __init__(self, refund_id: str, nth: int, work: Callable[[], Awaitable[object]]) -> None:
        super().__init__(MESSAGES, "payments.results")
        self._refund_id = refund_id
        self._left = nth
        self._work = work
        self.started: asyncio.Task[object] | None = None

    def event(
        self,
        refund: RefundView,
        standing: PaymentRefunds | None,
        occurred_at: datetime,
        event_id: str | None = None,
    ) -> OutboxMessage:
        if refund.refund_id == self._refund_id:
            self._left -= 1
            if self._left == 0:
                self.started = asyncio.ensure_future(self._work())
        return super().event(refund, standing, occurred_at, event_id)


def _refunds(store: RefundStore, provider, events: RefundEvents = EVENTS) -> RefundCommandHandler:
    return RefundCommandHandler(
        store=store, providers=Providers.of(provider), events=events, metrics=Metrics()
    )


def _refund(payment, minor: int) -> RefundPayment:
    return RefundPayment.create(
        idempotency_key=unique("refund"),
        payment_request_id=payment.payment_request_id,
        order_id=payment.order_id,
        amount=Money(minor, "EUR"),
        reason="requested_by_customer",
        requested_at=datetime.now(UTC),
    )


async def _paid(handler):
    command = create_payment(payer_number=SUCCESS_CARD, amount=Money(10_000, "EUR"))
    assert await handler.handle(command) is Outcome.SUCCEEDED
    return command


async def _events(engine, payment_id: str) -> list[tuple[str, RefundStatus, int | None]]:
    """The payment's refund events in queue order: (refund id, status, refunded total)."""
    async with engine.connect() as conn:
        rows = (await conn.execute(select(outbox.c.payload).order_by(outbox.c.id))).all()
    events = [MESSAGES.decode_any_result(r.payload) for r in rows]
    return [
        (e.refund_id, e.status, e.payment_refunded_minor)
        for e in events
        if isinstance(e, RefundResult) and e.payment_request_id == payment_id
    ]


def _other_worker(engine, clock) -> RefundStore:
    """Another consumer's store: its own writer queue, its own connections."""
    return RefundStore(engine, GroupCommit(engine), clock)


async def test_a_refund_settled_before_the_replay_queues_is_in_its_totals(
    engine, store, handler, provider, clock
):
    payment = await _paid(handler)
    first, second = _refund(payment, 3_000), _refund(payment, 5_000)
    assert await _refunds(RefundStore(engine, store.writes, clock), provider).handle(first) is (
        Outcome.SUCCEEDED
    )
    replaying = MeanwhileAtReplay(engine, store.writes, clock)
    other = _refunds(_other_worker(engine, clock), provider)

    async def meanwhile() -> None:
        assert await other.handle(second) is Outcome.SUCCEEDED

    replaying.meanwhile = meanwhile

    assert await _refunds(replaying, provider).handle(first) is Outcome.REPLAYED

    assert await _events(engine, payment.payment_request_id) == [
        (first.refund_id, RefundStatus.SUCCEEDED, 3_000),
        (second.refund_id, RefundStatus.SUCCEEDED, 8_000),
        (first.refund_id, RefundStatus.SUCCEEDED, 8_000),  # the replay: 30.00 on the old code
    ]
    view = await store.get_payment(payment.payment_request_id)
    assert (view.status, view.refunded_minor) == (PaymentStatus.PARTIALLY_REFUNDED, 8_000)


async def test_a_refund_settling_while_the_replay_holds_the_lock_is_queued_after_it(
    engine, store, handler, provider, clock
):
    payment = await _paid(handler)
    first, second = _refund(payment, 3_000), _refund(payment, 5_000)
    refund_store = RefundStore(engine, store.writes, clock)
    assert await _refunds(refund_store, provider).handle(first) is Outcome.SUCCEEDED
    other = _other_worker(engine, clock)
    started = await other.begin(second, EVENTS.at(clock()))
    assert isinstance(started, RefundStarted)

    async def settle_second() -> bool:
        return await other.finish(
            second.refund_id,
            claim=started.claim.token,
            status=RefundStatus.SUCCEEDED,
            provider_reference="re_second",
            error=None,
            event=EVENTS.at(clock()),
        )

    # Built only for the replay, under its lock.
    events = StartsWhileBuilding(first.refund_id, 1, settle_second)

    assert await _refunds(refund_store, provider, events).handle(first) is Outcome.REPLAYED

    assert events.started is not None
    assert await events.started is True
    assert await _events(engine, payment.payment_request_id) == [
        (first.refund_id, RefundStatus.SUCCEEDED, 3_000),
        (first.refund_id, RefundStatus.SUCCEEDED, 3_000),  # the replay, before the settle
        (second.refund_id, RefundStatus.SUCCEEDED, 8_000),
    ]


def _impatient_engine(url: str) -> AsyncEngine:
    """Another worker's engine that gives up on a lock within a moment instead of waiting:
    what it cannot do now fails (and is done again later) rather than deadlock a schedule
    that runs it while the first transaction waits for it."""
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_engine(url)

        def short_busy_timeout(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA busy_timeout=300")
            cursor.close()

        event.listen(engine.sync_engine, "connect", short_busy_timeout)
        return engine
    return create_async_engine(url, connect_args={"server_settings": {"lock_timeout": "300"}})


async def test_a_pending_outcome_reports_no_totals_older_than_a_settle_queued_before_it(
    engine, database_url, store, handler, clock
):
    """The first refund's pending outcome reads the payment's totals; at that moment
    another worker tries to settle the second refund. On the old code (PostgreSQL) nothing
    held the payment row, so the settle committed its event (50.00 refunded) first and the
    pending event (0) came after it. Now the pending outcome holds the payment's lock: the
    settle cannot happen in between, and is done after (on SQLite it never could)."""
    payment = await _paid(handler)
    first, second = _refund(payment, 3_000), _refund(payment, 5_000)
    one = RefundStore(engine, store.writes, clock)
    impatient = _impatient_engine(database_url)
    other = RefundStore(impatient, GroupCommit(impatient), clock)
    first_started = await one.begin(first, EVENTS.at(clock()))
    second_started = await other.begin(second, EVENTS.at(clock()))
    assert isinstance(first_started, RefundStarted)
    assert isinstance(second_started, RefundStarted)

    async def settle_second() -> bool:
        return await other.finish(
            second.refund_id,
            claim=second_started.claim.token,
            status=RefundStatus.SUCCEEDED,
            provider_reference="re_second",
            error=None,
            event=EVENTS.at(clock()),
        )

    settled_in_between: list[bool] = []

    def at_the_totals_read(_conn, _cursor, statement, *_args) -> None:
        if settled_in_between or not _reads_the_totals(statement):
            return
        try:
            settled_in_between.append(await_only(settle_second()))
        except DBAPIError:
            settled_in_between.append(False)  # it waits for this transaction's lock

    event.listen(engine.sync_engine, "after_cursor_execute", at_the_totals_read)
    try:
        assert await one.finish(
            first.refund_id,
            claim=first_started.claim.token,
            status=RefundStatus.PENDING,
            provider_reference=None,
            error=None,
            event=EVENTS.at(clock()),
        )
    finally:
        event.remove(engine.sync_engine, "after_cursor_execute", at_the_totals_read)
        if settled_in_between == [False]:
            assert await settle_second()
        await impatient.dispose()

    assert settled_in_between, "the schedule ran at the pending outcome's read of the totals"
    assert await _events(engine, payment.payment_request_id) == [
        (first.refund_id, RefundStatus.PENDING, 0),
        (second.refund_id, RefundStatus.SUCCEEDED, 5_000),
    ]


def _reads_the_totals(statement: str) -> bool:
    """The standing's read (persistence.refund_store._standing), not the lock's."""
    text = " ".join(statement.split()).upper()
    return (
        text.startswith("SELECT PAYMENTS.STATUS, PAYMENTS.REFUNDED_MINOR FROM PAYMENTS")
        and "FOR UPDATE" not in text
    )
