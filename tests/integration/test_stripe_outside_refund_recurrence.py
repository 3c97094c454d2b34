"""A refunded total that recurs once a Dashboard refund's failure took it back, and a refund
through paygate beyond what Stripe keeps after such a failure.

Through the facade's real application, Stripe's events verified by the official SDK, the
Stripe side tests.support.stripe_lagging_search (the rig of
tests.integration.test_stripe_refund_failures), on SQLite and PostgreSQL.

* The event of a rise of the refunded total from refunds made outside paygate was named by
  the payment and the total alone. Once a failure took a counted Dashboard refund back, a
  later Dashboard refund could raise the total to the same figure: its event got the id of
  the first rise, and a reader dropping duplicate ids (what the stable ids are for; the
  webhook fan-out skips a delivery whose id exists) never learnt the payment was refunded
  again: it kept ``succeeded`` while paygate recorded ``partially_refunded``.
* A failed Dashboard refund is taken net of the readings of the charge's refunded total
  Stripe made while it stood, and of one made in the same second as its failure (Stripe's
  ``created`` is whole seconds: such a reading may or may not still count it). Here every
  event is made in one second (the test clock stands still), so the reading after the
  failure is netted: paygate counts less than was refunded outside, and offers to refund
  more than Stripe keeps. That is safe only because Stripe refuses a refund beyond what is
  left unrefunded on the charge; the stand-in must refuse it as Stripe does, or a test
  would pass a refund of more than the payer paid. With the readings a second or more
  apart, the count is exact (tests.integration.test_stripe_outside_refund_failure_times).
"""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.outcome import Outcome
from domain.errors import ErrorCode
from domain.events import PaymentResult
from domain.status import PaymentStatus
from persistence.payment_store import PaymentStore
from persistence.tables import outbox
from tests.integration import test_stripe_refund_failures as failures
from tests.integration.test_stripe_refund_failures import (
    AMOUNT,
    MESSAGES,
    Rig,
    outside_refunded,
    paid,
    post,
    refund_of,
    totals,
)

pytestmark = pytest.mark.integration

rig = failures.rig  # the facade, the Stripe stand-in and the handlers, as that module's


async def payment_events(engine: AsyncEngine, payment_id: str) -> list[PaymentResult]:
    async with engine.connect() as conn:
        payloads = (await conn.execute(select(outbox.c.payload).order_by(outbox.c.id))).scalars()
        decoded = [MESSAGES.decode_any_result(p) for p in payloads]
    return [
        e for e in decoded if isinstance(e, PaymentResult) and e.payment_request_id == payment_id
    ]


def as_a_deduplicating_reader_sees_it(events: list[PaymentResult]) -> PaymentStatus:
    """The last status a reader that drops an event whose id it has seen keeps."""
    seen: set[str] = set()
    status = events[0].status
    for e in events:
        if e.event_id not in seen:
            seen.add(e.event_id)
            status = e.status
    return status


async def refunded_again_after_a_take_back(rig: Rig, store: PaymentStore) -> tuple[str, str]:
    """A Dashboard refund of 300, counted, then failed (taken back); then a Dashboard refund
    of 600, all in one second: Stripe's reading after the failure says 600 refunded; paygate
    counts 300 of it (net of the failed 300: the same second as the failure). The payment's
    id and its PaymentIntent's."""
    view, intent_id = await paid(rig, store)
    pid = view.payment_request_id
    first = rig.stripe_api.refund_outside(intent_id, 300)
    assert await post(rig, "charge.refunded", rig.stripe_api.charge(intent_id)) == 200
    assert await post(rig, "refund.failed", rig.stripe_api.fail_refund(first)) == 200
    assert await totals(store, pid) == (PaymentStatus.SUCCEEDED, 0, AMOUNT)
    rig.stripe_api.refund_outside(intent_id, 600)
    after = rig.stripe_api.charge(intent_id)
    assert after["amount_refunded"] == 600
    assert await post(rig, "charge.refunded", after) == 200
    return pid, intent_id


async def test_a_total_reached_again_after_a_take_back_is_news_with_an_id_of_its_own(
    rig: Rig, store: PaymentStore, engine: AsyncEngine
):
    pid, _ = await refunded_again_after_a_take_back(rig, store)
    assert await totals(store, pid) == (PaymentStatus.PARTIALLY_REFUNDED, 300, AMOUNT - 300)

    events = await payment_events(engine, pid)
    assert [e.status for e in events] == [
        PaymentStatus.SUCCEEDED,
        PaymentStatus.PARTIALLY_REFUNDED,  # the first Dashboard refund counted
        PaymentStatus.SUCCEEDED,  # its failure taken back
        PaymentStatus.PARTIALLY_REFUNDED,  # the second counted (net of the failed one)
    ]
    assert len({e.event_id for e in events}) == len(events)
    assert as_a_deduplicating_reader_sees_it(events) is PaymentStatus.PARTIALLY_REFUNDED


async def test_a_refund_beyond_what_stripe_keeps_after_a_take_back_is_refused_by_stripe(
    rig: Rig, store: PaymentStore, engine: AsyncEngine
):
    """paygate counts 300 of the 600 refunded outside (the documented price of netting a
    reading made in the failure's second): it offers 750, Stripe keeps 450. A refund
    of 750 is refused by Stripe (``amount_too_large``), nothing moves; 450 is refunded; the
    charge is never refunded beyond what it took."""
    pid, intent_id = await refunded_again_after_a_take_back(rig, store)
    too_much = refund_of(await _view(store, pid), AMOUNT - 300, "own-1")
    assert await rig.refunds.handle(too_much) is Outcome.FAILED
    refused = await rig.refund_store.get(too_much.refund_id)
    assert refused is not None
    assert refused.error is not None
    assert refused.error.code is ErrorCode.REFUND_EXCEEDS_CAPTURED
    assert rig.stripe_api.charge(intent_id)["amount_refunded"] == 600
    assert await totals(store, pid) == (PaymentStatus.PARTIALLY_REFUNDED, 300, AMOUNT - 300)

    owed = refund_of(await _view(store, pid), AMOUNT - 600, "own-2")
    assert await rig.refunds.handle(owed) is Outcome.SUCCEEDED
    assert rig.stripe_api.charge(intent_id)["amount_refunded"] == AMOUNT
    assert await outside_refunded(rig, store, engine, pid) == 300

    # Refunded in full at Stripe: one more refund is refused, as Stripe does.
    last = refund_of(await _view(store, pid), 1, "own-3")
    assert await rig.refunds.handle(last) is Outcome.FAILED
    assert rig.stripe_api.charge(intent_id)["amount_refunded"] == AMOUNT


async def _view(store: PaymentStore, pid: str):
    view = await store.get_payment(pid)
    assert view is not None
    return view
