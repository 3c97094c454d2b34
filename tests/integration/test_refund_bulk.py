"""Refund begins and finishes of concurrent callers, run in bulk, on SQLite and PostgreSQL.

Every test starts its operations together (``asyncio.gather``), so they land in one
group-commit batch (one transaction, counted) and take the bulk path; each checks that the
answers, the payments' totals and the events are what the same operations give one at a
time, and above all the reservation rule: what a payment's refunds reserve and settle never
exceeds what it captured, also when several of them share a batch.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from domain.errors import ErrorCode
from domain.money import Money
from domain.refunds import RefundStatus
from domain.status import PaymentStatus
from persistence.refund_store import RefundExisting, RefundRefused, RefundStarted, RefundStore
from persistence.tables import payments
from tests.integration.test_bulk_writes import _counting
from tests.integration.test_refund_store import (
    _event,
    _refund_events,
    refund_of,
    succeeded_payment,
)

pytestmark = pytest.mark.integration

EUR = "EUR"


@pytest.fixture
def refunds(engine, store):
    return RefundStore(engine, store.writes)


async def _totals(engine, payment_id: str) -> tuple[str, int, int]:
    async with engine.connect() as conn:
        row = (await conn.execute(select(payments).where(payments.c.id == payment_id))).one()
    return row.status, row.refunded_minor, row.refund_reserved_minor


async def _finish(refunds, begun: RefundStarted, status: RefundStatus, claim: str | None = None):
    return await refunds.finish(
        begun.refund.refund_id,
        claim=claim or begun.claim.token,
        status=status,
        provider_reference=f"re-{begun.refund.refund_id}",
        error=None,
        event=_event,
    )


def _shape(result) -> tuple[str, ErrorCode | None, int | None]:
    """What a begin answered, comparable across payments."""
    refund = result.refund
    amount = None if refund is None or refund.amount is None else refund.amount.minor_units
    code = result.error.code if isinstance(result, RefundRefused) else None
    return type(result).__name__, code, amount


async def test_a_batch_of_refunds_is_a_handful_of_statements_per_step(engine, store, refunds):
    paid = [await succeeded_payment(store) for _ in range(20)]
    counts = _counting(engine)
    begun = await asyncio.gather(
        *(refunds.begin(refund_of(p, Money(500, EUR)), _event) for p in paid)
    )
    assert all(isinstance(b, RefundStarted) for b in begun)
    assert counts["transactions"] == 1
    # (PostgreSQL: the writer queue locks the batch's payments, persistence.lock_order),
    # lock and read the payments, read the refund ids, reserve, (PostgreSQL: read the
    # totals back), insert the refunds: not four per refund.
    assert counts["statements"] <= 7
    for payment in paid:
        assert await _totals(engine, payment.payment_request_id) == ("succeeded", 0, 500)

    counts = _counting(engine)
    finished = await asyncio.gather(*(_finish(refunds, b, RefundStatus.SUCCEEDED) for b in begun))
    assert list(finished) == [True] * 20
    assert counts["transactions"] == 1
    # (PostgreSQL: the writer queue locks the batch's payments, then its refunds:
    # persistence.lock_order), lock and read the refunds, move them, lock and read the
    # payments, move their totals, (PostgreSQL: read them back), the events and their
    # webhook query: not five per refund.
    assert counts["statements"] <= 10
    for payment, started in zip(paid, begun, strict=True):
        assert await _totals(engine, payment.payment_request_id) == ("partially_refunded", 500, 0)
        stored = await refunds.get(started.refund.refund_id)
        assert stored.status is RefundStatus.SUCCEEDED
        assert stored.provider_reference == f"re-{started.refund.refund_id}"
        (event,) = await _refund_events(engine, started.refund.refund_id)
        assert event.status is RefundStatus.SUCCEEDED
        assert (event.payment_status, event.payment_refunded_minor) == (
            PaymentStatus.PARTIALLY_REFUNDED,
            500,
        )


@pytest.mark.parametrize(
    "amounts",
    [
        pytest.param([6_000, 6_000], id="two that do not fit together"),
        pytest.param([4_000, 4_000, 4_000], id="three of which two fit"),
        pytest.param([3_000, None, 1], id="a part, then all that remains, then one cent more"),
        pytest.param([10_000, 1, None], id="all of it, then nothing fits"),
    ],
)
async def test_refunds_of_one_payment_in_one_batch_never_exceed_what_was_captured(
    engine, store, refunds, amounts
):
    """The batch's refunds of one payment, among others' refunds, answer as the same refunds
    one after another do (on a twin payment), and reserve no more than 10,000 captured."""
    payment, twin = await succeeded_payment(store), await succeeded_payment(store)
    others = [await succeeded_payment(store) for _ in range(3)]

    def commands(of):
        return [refund_of(of, None if a is None else Money(a, EUR)) for a in amounts]

    counts = _counting(engine)
    mixed = [refund_of(o, Money(700, EUR)) for o in others]
    own = commands(payment)
    # Each command its own key (the same one twice is a replay: the test below).
    batch = [mixed[0], own[0], mixed[1], *own[1:], mixed[2]]
    answers = await asyncio.gather(*(refunds.begin(c, _event) for c in batch))
    assert counts["transactions"] == 1
    mine = [
        a
        for c, a in zip(batch, answers, strict=True)
        if c.payment_request_id == payment.payment_request_id
    ]
    one_at_a_time = [await refunds.begin(c, _event) for c in commands(twin)]

    assert [_shape(a) for a in mine] == [_shape(a) for a in one_at_a_time]
    refused = [a for a in mine if isinstance(a, RefundRefused)]
    assert refused, "one of them does not fit"
    assert {r.error.code for r in refused} == {ErrorCode.REFUND_EXCEEDS_CAPTURED}
    reserved = 0
    for answer in mine:
        if isinstance(answer, RefundStarted) and answer.refund.amount is not None:
            reserved += answer.refund.amount.minor_units
    assert reserved <= 10_000
    assert await _totals(engine, payment.payment_request_id) == ("succeeded", 0, reserved)
    assert await _totals(engine, twin.payment_request_id) == ("succeeded", 0, reserved)
    for other, answer in zip(others, [answers[0], answers[2], answers[-1]], strict=True):
        assert isinstance(answer, RefundStarted)
        assert await _totals(engine, other.payment_request_id) == ("succeeded", 0, 700)
    for answer in refused:
        # Stored failed, with its event, as a refusal one at a time is.
        assert answer.refund is not None
        stored = await refunds.get(answer.refund.refund_id)
        assert stored.status is RefundStatus.FAILED
        assert stored.error.code is ErrorCode.REFUND_EXCEEDS_CAPTURED
        (event,) = await _refund_events(engine, answer.refund.refund_id)
        assert event.error.code is ErrorCode.REFUND_EXCEEDS_CAPTURED

    # Settled together, they take no more than was captured either.
    started = [a for a in mine if isinstance(a, RefundStarted)]
    assert all(
        await asyncio.gather(*(_finish(refunds, s, RefundStatus.SUCCEEDED) for s in started))
    )
    status, refunded, still_reserved = await _totals(engine, payment.payment_request_id)
    assert (refunded, still_reserved) == (reserved, 0)
    assert status == ("refunded" if reserved == 10_000 else "partially_refunded")


async def test_a_refund_replayed_in_a_batch_is_answered_once_and_reserved_once(
    engine, store, refunds
):
    payment, other = await succeeded_payment(store), await succeeded_payment(store)
    earlier = refund_of(payment, Money(1_000, EUR), key="earlier")
    first = await refunds.begin(earlier, _event)
    assert isinstance(first, RefundStarted)
    twice = refund_of(payment, Money(2_000, EUR), key="twice")
    conflicting = refund_of(payment, Money(3_000, EUR), key="earlier")
    batch = [earlier, twice, refund_of(other, Money(500, EUR)), twice, conflicting]

    counts = _counting(engine)
    answers = await asyncio.gather(*(refunds.begin(c, _event) for c in batch))
    assert counts["transactions"] == 1

    replay, new, for_other, duplicate, conflict = answers
    assert isinstance(replay, RefundExisting)
    assert replay.same_parameters
    assert replay.refund == first.refund
    assert replay.charge_reference == "ch_test"
    assert isinstance(new, RefundStarted)
    assert isinstance(duplicate, RefundExisting)
    assert duplicate.same_parameters
    assert duplicate.refund.refund_id == new.refund.refund_id
    assert isinstance(conflict, RefundExisting)
    assert not conflict.same_parameters
    assert isinstance(for_other, RefundStarted)
    # 1,000 before the batch and 2,000 once: not a second 1,000 nor a second 2,000.
    assert await _totals(engine, payment.payment_request_id) == ("succeeded", 0, 3_000)
    assert len(await refunds.of_payment(payment.payment_request_id)) == 2


async def test_a_batch_of_finishes_reports_each_refund_with_the_totals_it_leaves(
    engine, store, refunds
):
    payment, other, third = [await succeeded_payment(store) for _ in range(3)]
    begun = [await refunds.begin(refund_of(payment, Money(a, EUR)), _event) for a in (3_000, 4_000)]
    on_other = await refunds.begin(refund_of(other, Money(2_000, EUR)), _event)
    on_third = await refunds.begin(refund_of(third, Money(1_000, EUR)), _event)
    assert all(isinstance(b, RefundStarted) for b in [*begun, on_other, on_third])

    counts = _counting(engine)
    done = await asyncio.gather(
        _finish(refunds, begun[0], RefundStatus.SUCCEEDED),
        _finish(refunds, on_other, RefundStatus.FAILED),
        _finish(refunds, begun[1], RefundStatus.SUCCEEDED),
        _finish(refunds, on_third, RefundStatus.PENDING),
    )
    assert list(done) == [True] * 4
    assert counts["transactions"] == 1

    assert await _totals(engine, payment.payment_request_id) == ("partially_refunded", 7_000, 0)
    assert await _totals(engine, other.payment_request_id) == ("succeeded", 0, 0)
    assert await _totals(engine, third.payment_request_id) == ("succeeded", 0, 1_000)
    # In the batch's order, each with the totals its own settlement left.
    standings = []
    for started in [*begun, on_other, on_third]:
        *_, event = await _refund_events(engine, started.refund.refund_id)
        standings.append((event.status, event.payment_refunded_minor))
    assert standings == [
        (RefundStatus.SUCCEEDED, 3_000),
        (RefundStatus.SUCCEEDED, 7_000),
        (RefundStatus.FAILED, 0),
        (RefundStatus.PENDING, 0),
    ]


async def test_a_finish_that_does_not_apply_in_a_batch_changes_nothing_and_frees_the_rest(
    engine, store, refunds
):
    payment, other, third = [await succeeded_payment(store) for _ in range(3)]
    mine = await refunds.begin(refund_of(payment, Money(3_000, EUR)), _event)
    theirs = await refunds.begin(refund_of(other, Money(2_000, EUR)), _event)
    plain = await refunds.begin(refund_of(third, Money(1_000, EUR)), _event)
    assert all(isinstance(b, RefundStarted) for b in (mine, theirs, plain))

    counts = _counting(engine)
    done = await asyncio.gather(
        _finish(refunds, mine, RefundStatus.SUCCEEDED, claim="not-the-holder"),
        _finish(refunds, theirs, RefundStatus.SUCCEEDED),
        _finish(refunds, plain, RefundStatus.FAILED),
        _finish(refunds, theirs, RefundStatus.SUCCEEDED),
    )
    assert counts["transactions"] == 1
    # The stranger's finish records nothing; of the holder's two, one applies.
    assert done[0] is False
    assert done[2] is True
    assert sorted([done[1], done[3]]) == [False, True]
    assert await _totals(engine, third.payment_request_id) == ("succeeded", 0, 0)
    assert await _totals(engine, payment.payment_request_id) == ("succeeded", 0, 3_000)
    assert await _totals(engine, other.payment_request_id) == ("partially_refunded", 2_000, 0)
    assert (await refunds.get(mine.refund.refund_id)).status is RefundStatus.PROCESSING
