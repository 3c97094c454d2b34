"""A bulk capture finish must not lock a payment whose claim is another worker's.

A follow-up's finish changes nothing unless the payment is in flight under the finisher's
claim (persistence.claims): a stale finish (the lease ran out, a reconciler took the claim
over and settles the capture) has no business locking the row. Locked all the same, it
waits on the claim's holder, who holds that payment and may be about to lock a payment the
stale finisher's batch locked earlier (a capture begin of it): a deadlock, which PostgreSQL
breaks after a second by failing one of the two batches. Alone, the stale finish's
conditional UPDATE does not match the row as committed and so does not wait.
PostgreSQL only: SQLite has no row locks.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import event, select, text

import persistence.follow_up as follow_up
import persistence.follow_up_store as follow_up_store
from consumer.payment_handler import PaymentCommandHandler
from persistence.capture_store import CaptureStarted, CaptureStore
from persistence.engine import create_engine
from persistence.migrate import create_schema
from persistence.payment_store import PaymentStore
from persistence.tables import payments
from providers.registry import Providers
from providers.routing import Router
from telemetry.metrics import Metrics
from tests.integration.test_capture_bulk import _capture, _event, _refusal
from tests.integration.test_captures import EVENTS
from tests.support.builders import create_payment

pytestmark = pytest.mark.integration

_LOCK_WAITERS = text(
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


@pytest.fixture
async def two_processes(postgres_database_url: str, clock) -> AsyncIterator[list[CaptureStore]]:
    """Two engines and writer queues on one database, as two consumer processes have."""
    first, second = create_engine(postgres_database_url), create_engine(postgres_database_url)
    await create_schema(first)
    try:
        yield [
            CaptureStore(first, PaymentStore(first, clock).writes, clock),
            CaptureStore(second, PaymentStore(second, clock).writes, clock),
        ]
    finally:
        await first.dispose()
        await second.dispose()


def _deadlocks(engines) -> list[str]:
    seen: list[str] = []
    for engine in engines:

        @event.listens_for(engine.sync_engine, "handle_error")
        def _error(context) -> None:
            if "deadlock" in str(context.original_exception).lower():
                seen.append(str(context.original_exception))

    return seen


async def test_a_stale_capture_finish_in_a_batch_with_a_begin_does_not_deadlock_the_holder(
    two_processes, clock, provider, monkeypatch
):
    one, two = two_processes
    first_engine, second_engine = one._engine, two._engine
    authorizer = PaymentCommandHandler(
        store=PaymentStore(first_engine, clock),
        providers=Providers.of(provider),
        router=Router.catch_all(provider.name),
        events=EVENTS,
        account_key=b"k",
        metrics=Metrics(),
    )
    taken_over, plain, contested = [
        dataclasses.replace(create_payment(), capture=False) for _ in range(3)
    ]
    for command in (taken_over, plain, contested):
        await authorizer.handle(command)
    stale = await one.begin(_capture(taken_over), _refusal)
    assert isinstance(stale, CaptureStarted)
    # The lease runs out: process 2 (a reconciler) takes the capture of ``taken_over`` over.
    clock.now += timedelta(minutes=5)
    holder = await two.claim(taken_over.payment_request_id)
    assert holder is not None
    mine = await one.begin(_capture(plain), _refusal)
    assert isinstance(mine, CaptureStarted)
    deadlocks = _deadlocks([first_engine, second_engine])

    # Process 2, one batch: it settles the capture it took over (the payment's row locked),
    # then begins a capture of ``contested``, waiting here before it locks that row.
    holding, resume = asyncio.Event(), asyncio.Event()
    original = follow_up.locked_follow_up

    async def before_the_lock(conn, command, refusal_event, now):
        if command.payment_request_id == contested.payment_request_id and not holding.is_set():
            holding.set()
            await resume.wait()
        return await original(conn, command, refusal_event, now)

    monkeypatch.setattr(follow_up_store, "locked_follow_up", before_the_lock)
    settling = asyncio.gather(
        two.finish(
            taken_over.payment_request_id,
            claim=holder.claim.token,
            captured=True,
            error=None,
            event=_event,
        ),
        two.begin(_capture(contested), _refusal),
    )
    await holding.wait()

    # Process 1, one batch: a capture of ``contested`` (its row locked), the stale finish of
    # the capture taken over, and its own capture's finish (so finishes run in bulk).
    batch = asyncio.gather(
        one.begin(_capture(contested), _refusal),
        one.finish(
            taken_over.payment_request_id,
            claim=stale.claim.token,
            captured=True,
            error=None,
            event=_event,
        ),
        one.finish(
            plain.payment_request_id,
            claim=mine.claim.token,
            captured=True,
            error=None,
            event=_event,
        ),
    )
    # Until the batch is done or waits on a row lock (a bounded wait on a condition).
    # A new transaction per look: PostgreSQL shows one transaction the same
    # pg_stat_activity throughout.
    for _ in range(3_000):
        async with first_engine.connect() as conn:
            if batch.done() or (await conn.execute(_LOCK_WAITERS)).scalar_one() > 0:
                break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the batch neither finished nor waited on a lock")
    resume.set()
    begun, stale_finished, finished = await batch
    settled, contested_begun = await settling

    assert deadlocks == []
    # One of the two captures of ``contested`` starts, the other finds it under way: which
    # one depends on who locked the row first (with every batch taking its locks up front,
    # persistence.lock_order, process 2 holds it from its batch's start).
    started = [b for b in (begun, contested_begun) if isinstance(b, CaptureStarted)]
    assert len(started) == 1
    others = [b for b in (begun, contested_begun) if not isinstance(b, CaptureStarted)]
    assert [type(b).__name__ for b in others] == ["FollowUpExisting"]
    assert stale_finished is False
    assert finished is True
    assert settled is True
    async with first_engine.connect() as conn:
        rows = {
            row.id: (row.status, row.claim_token)
            for row in await conn.execute(
                select(payments.c.id, payments.c.status, payments.c.claim_token).where(
                    payments.c.id.in_(
                        [c.payment_request_id for c in (taken_over, plain, contested)]
                    )
                )
            )
        }
    assert rows[taken_over.payment_request_id] == ("succeeded", None)
    assert rows[plain.payment_request_id] == ("succeeded", None)
    assert rows[contested.payment_request_id] == ("capturing", started[0].claim.token)
