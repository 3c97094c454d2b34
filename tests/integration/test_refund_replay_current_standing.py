"""A refund's event never carries totals older than an event queued before it.

Found by review: the refund handler's replay read the payment's standing (``paymentStatus``,
``paymentRefundedMinor``) without a lock and queued the event in a transaction of its own.
Another refund of the payment that settled in between had its event (refunded 80.00)
queued first and the replay's (refunded 30.00) after it: a reader keeping the last totals
per payment saw them go back. The replay now reads the refund and the standing under the
payment's row lock (the lock refunds settle under) in the transaction that queues the
event; a pending outcome, which moves no total, takes that lock too.

The schedules, deterministic on both databases, put another worker's settle at the moment
the totals are read (a hook on that very statement). The other worker gives up on a lock
within a moment (and settles again afterwards) instead of waiting for a transaction that
waits for it:

* at a replay's read of the totals (the regression: on the old code the settle got in
  between on both databases, and the replay said 30.00 after 80.00);
* at a pending outcome's read of the totals (on the old code the settle got in between on
  PostgreSQL; SQLite's writers run one at a time);
* and, plainly, a settle committed before the replay begins is in the replay's totals.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
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
from domain.refunds import RefundPayment, RefundStatus
from domain.status import PaymentStatus
from persistence.engine import create_engine
from persistence.group_commit import GroupCommit
from persistence.refund_store import RefundStarted, RefundStore
from persistence.tables import outbox
from providers.registry import Providers
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import SUCCESS_CARD, create_payment, unique

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()
EVENTS = RefundEvents(MESSAGES, "payments.results")


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


def _reads_the_totals(statement: str) -> bool:
    """The standing's read (persistence.refund_rows.standing_in), not the lock's."""
    text = " ".join(statement.split()).upper()
    return (
        text.startswith("SELECT PAYMENTS.STATUS, PAYMENTS.REFUNDED_MINOR FROM PAYMENTS")
        and "FOR UPDATE" not in text
    )


@contextmanager
def at_the_totals_read(engine, settle: Callable[[], Awaitable[bool]]) -> Iterator[list[bool]]:
    """While inside, the first read of a payment's totals on ``engine`` runs ``settle`` to
    its end before the reader goes on; yields [True] if it settled then, [False] if a lock
    held by the reader's transaction stopped it (the caller settles it again after)."""
    settled: list[bool] = []

    def after_execute(_conn, _cursor, statement, *_args) -> None:
        if settled or not _reads_the_totals(statement):
            return
        try:
            settled.append(await_only(settle()))
        except DBAPIError:
            settled.append(False)

    event.listen(engine.sync_engine, "after_cursor_execute", after_execute)
    try:
        yield settled
    finally:
        event.remove(engine.sync_engine, "after_cursor_execute", after_execute)
    assert settled, "the schedule ran at the read of the totals"


def _refunds(store: RefundStore, provider) -> RefundCommandHandler:
    return RefundCommandHandler(
        store=store, providers=Providers.of(provider), events=EVENTS, metrics=Metrics()
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


@pytest.fixture
async def other_worker(database_url, clock):
    """Another consumer's refund store: its own engine (impatient), its own writer queue."""
    engine = _impatient_engine(database_url)
    yield RefundStore(engine, GroupCommit(engine), clock)
    await engine.dispose()


async def _begun(store: RefundStore, command: RefundPayment) -> RefundStarted:
    started = await store.begin(command, EVENTS.at(datetime.now(UTC)))
    assert isinstance(started, RefundStarted)
    return started


def _settle(store: RefundStore, started: RefundStarted) -> Callable[[], Awaitable[bool]]:
    async def settle() -> bool:
        return await store.finish(
            started.refund.refund_id,
            claim=started.claim.token,
            status=RefundStatus.SUCCEEDED,
            provider_reference="re_settled",
            error=None,
            event=EVENTS.at(datetime.now(UTC)),
        )

    return settle


async def test_a_refund_settling_at_the_replays_read_of_the_totals_is_queued_after_the_replay(
    engine, store, handler, provider, clock, other_worker
):
    payment = await _paid(handler)
    first, second = _refund(payment, 3_000), _refund(payment, 5_000)
    refunds = _refunds(RefundStore(engine, store.writes, clock), provider)
    assert await refunds.handle(first) is Outcome.SUCCEEDED
    settle_second = _settle(other_worker, await _begun(other_worker, second))

    with at_the_totals_read(engine, settle_second) as settled:
        assert await refunds.handle(first) is Outcome.REPLAYED
    if settled == [False]:
        assert await settle_second()  # after the replay, whose lock stopped it

    assert await _events(engine, payment.payment_request_id) == [
        (first.refund_id, RefundStatus.SUCCEEDED, 3_000),
        (first.refund_id, RefundStatus.SUCCEEDED, 3_000),  # the replay, before the settle
        (second.refund_id, RefundStatus.SUCCEEDED, 8_000),
    ]
    assert settled == [False]


async def test_a_refund_settled_before_the_replay_is_in_its_totals(
    engine, store, handler, provider, clock, other_worker
):
    payment = await _paid(handler)
    first, second = _refund(payment, 3_000), _refund(payment, 5_000)
    refunds = _refunds(RefundStore(engine, store.writes, clock), provider)
    assert await refunds.handle(first) is Outcome.SUCCEEDED
    assert await _settle(other_worker, await _begun(other_worker, second))()

    assert await refunds.handle(first) is Outcome.REPLAYED

    assert await _events(engine, payment.payment_request_id) == [
        (first.refund_id, RefundStatus.SUCCEEDED, 3_000),
        (second.refund_id, RefundStatus.SUCCEEDED, 8_000),
        (first.refund_id, RefundStatus.SUCCEEDED, 8_000),
    ]
    view = await store.get_payment(payment.payment_request_id)
    assert (view.status, view.refunded_minor) == (PaymentStatus.PARTIALLY_REFUNDED, 8_000)


async def test_a_pending_outcome_reports_no_totals_older_than_a_settle_queued_before_it(
    engine, store, handler, clock, other_worker
):
    payment = await _paid(handler)
    first, second = _refund(payment, 3_000), _refund(payment, 5_000)
    one = RefundStore(engine, store.writes, clock)
    first_started = await _begun(one, first)
    settle_second = _settle(other_worker, await _begun(other_worker, second))

    with at_the_totals_read(engine, settle_second) as settled:
        assert await one.finish(
            first.refund_id,
            claim=first_started.claim.token,
            status=RefundStatus.PENDING,
            provider_reference=None,
            error=None,
            event=EVENTS.at(clock()),
        )
    if settled == [False]:
        assert await settle_second()  # after the pending outcome, whose lock stopped it

    assert await _events(engine, payment.payment_request_id) == [
        (first.refund_id, RefundStatus.PENDING, 0),
        (second.refund_id, RefundStatus.SUCCEEDED, 5_000),
    ]
    assert settled == [False]
