"""A Dashboard refund's failure is netted only from the readings Stripe made while that
refund stood, by Stripe's times, whatever order the events arrive in.

Through the facade's real application, Stripe's events signed as Stripe signs them and
verified by the official SDK, the Stripe side tests.support.stripe_lagging_search (the rig
of tests.integration.test_stripe_refund_failures), on SQLite and PostgreSQL. The test clock
moves one second between Stripe's facts, and every event carries the ``created`` of the
moment its snapshot was taken.

The story: 300 refunded in the Dashboard (second 0), 200 more (second 1, Stripe's reading
500), that 200 failed (second 2), 100 more (second 3, Stripe's reading 400). Stripe holds
400 refunded outside. Before, the failed 200 was taken off every later reading, also off the
400 Stripe made after the failure (which already leaves it out): paygate counted 300 and
offered the payer 750 where Stripe keeps 650; and a reading delivered before the failure
it came after was lost to it.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.outcome import Outcome
from domain.errors import ErrorCode
from domain.status import PaymentStatus
from persistence.payment_store import PaymentStore
from persistence.tables import outbox
from tests.integration import test_stripe_refund_failures as failures
from tests.integration.test_stripe_refund_failures import (
    AMOUNT,
    Rig,
    outside_refunded,
    paid,
    post,
    refund_of,
    totals,
)
from tests.support.clock import Clock

pytestmark = pytest.mark.integration

rig = failures.rig  # the facade, the Stripe stand-in and the handlers, as that module's

Event = tuple[str, dict[str, object], int]  # type, object, Stripe's created


async def dashboard_story(rig: Rig, store: PaymentStore, clock: Clock) -> tuple[str, list[Event]]:
    """The module's story made at Stripe; the payment's id and the events Stripe made,
    in the order it made them: the readings of seconds 0, 1 and 3 and the failure."""
    view, intent_id = await paid(rig, store)
    made: list[Event] = []

    def reading() -> None:
        made.append(
            ("charge.refunded", rig.stripe_api.charge(intent_id), rig.stripe_api.now_unix())
        )

    rig.stripe_api.refund_outside(intent_id, 300)
    reading()
    clock.now += timedelta(seconds=1)
    failing = rig.stripe_api.refund_outside(intent_id, 200)
    reading()
    clock.now += timedelta(seconds=1)
    failed = rig.stripe_api.fail_refund(failing)
    made.append(("refund.failed", failed, rig.stripe_api.now_unix()))
    clock.now += timedelta(seconds=1)
    rig.stripe_api.refund_outside(intent_id, 100)
    reading()
    assert [obj.get("amount_refunded") for _, obj, _ in made] == [300, 500, None, 400]
    assert rig.stripe_api.unrefunded(intent_id) == AMOUNT - 400
    return view.payment_request_id, made


async def deliver(rig: Rig, events: list[Event]) -> None:
    for event_type, obj, created in events:
        assert await post(rig, event_type, obj, made_at=created) == 200


async def outbox_rows(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(outbox))).scalar_one())


async def test_a_total_stripe_made_after_a_failure_counts_what_stripe_holds_refunded_outside(
    rig: Rig, store: PaymentStore, engine: AsyncEngine, clock: Clock
):
    pid, (first, both, failure, after) = await dashboard_story(rig, store, clock)
    await deliver(rig, [first, both])
    assert await outside_refunded(rig, store, engine, pid) == 500
    await deliver(rig, [failure])
    assert await outside_refunded(rig, store, engine, pid) == 300
    await deliver(rig, [after])  # made after the failure: it already leaves the 200 out
    assert await totals(store, pid) == (PaymentStatus.PARTIALLY_REFUNDED, 400, AMOUNT - 400)
    assert await outside_refunded(rig, store, engine, pid) == 400

    # Stripe delivers each again, and the readings made before the failure late: the
    # failed 200 is never counted again, nothing changes, no event is added.
    events = await outbox_rows(engine)
    await deliver(rig, [both, failure, first, after, both])
    assert await outside_refunded(rig, store, engine, pid) == 400
    assert await outbox_rows(engine) == events

    # What paygate offers is what Stripe keeps: refunded through paygate, and no more.
    view = await store.get_payment(pid)
    assert view is not None
    too_much = refund_of(view, AMOUNT - 300, "own-1")
    assert await rig.refunds.handle(too_much) is Outcome.REFUSED  # by paygate, not sent
    assert rig.stripe_api.unrefunded(view.provider_reference or "") == AMOUNT - 400
    refused = await rig.refund_store.get(too_much.refund_id)
    assert refused is not None
    assert refused.error is not None
    assert refused.error.code is ErrorCode.REFUND_EXCEEDS_CAPTURED
    assert await rig.refunds.handle(refund_of(view, AMOUNT - 400, "own-2")) is Outcome.SUCCEEDED
    assert await totals(store, pid) == (PaymentStatus.REFUNDED, AMOUNT, 0)
    assert await outside_refunded(rig, store, engine, pid) == 400


async def test_a_total_made_after_a_failure_and_delivered_before_it_is_not_lost(
    rig: Rig, store: PaymentStore, engine: AsyncEngine, clock: Clock
):
    """Stripe delivers its reading of second 3 before the failure of second 2 (webhooks
    arrive out of order): the reading, lower than what was counted, changes nothing then;
    the failure then falls to it, not below it."""
    pid, (first, both, failure, after) = await dashboard_story(rig, store, clock)
    await deliver(rig, [first, both, after])
    assert await outside_refunded(rig, store, engine, pid) == 500  # never falls on a reading
    await deliver(rig, [failure])
    assert await totals(store, pid) == (PaymentStatus.PARTIALLY_REFUNDED, 400, AMOUNT - 400)
    assert await outside_refunded(rig, store, engine, pid) == 400

    events = await outbox_rows(engine)
    await deliver(rig, [failure, after, both, first])  # each again
    assert await outside_refunded(rig, store, engine, pid) == 400
    assert await outbox_rows(engine) == events


async def test_a_failure_delivered_first_nets_only_the_readings_made_while_it_stood(
    rig: Rig, store: PaymentStore, engine: AsyncEngine, clock: Clock
):
    """The failure arrives before any reading: the reading of second 1 (which counts the
    failed 200) is netted of it; those of seconds 0 (before it was made) and 3 (after it
    failed) are taken whole."""
    pid, (first, both, failure, after) = await dashboard_story(rig, store, clock)
    await deliver(rig, [failure])
    assert await outside_refunded(rig, store, engine, pid) == 0
    await deliver(rig, [both])
    assert await outside_refunded(rig, store, engine, pid) == 300
    await deliver(rig, [first])
    assert await outside_refunded(rig, store, engine, pid) == 300
    await deliver(rig, [after])
    assert await outside_refunded(rig, store, engine, pid) == 400
