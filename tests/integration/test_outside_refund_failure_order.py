"""Every delivery order of Stripe's readings and a Dashboard refund's failure ends on what
Stripe holds refunded outside, and never counts the failed refund after its failure.

Store level, on SQLite and PostgreSQL (the ``engine`` fixture). Stripe's facts, by its
clock (seconds): 3000 refunded in the Dashboard at 10 (reading 3000), 2000 more made at
20 (reading 5000), that 2000 failed at 30, 500 more at 40 (reading 3500). Stripe then holds
3500 refunded outside. Each of the 24 orders of the three readings and the failure is
delivered to a payment of its own, and then every one of them again (Stripe's retries);
the equality ``refunded_minor = succeeded refund rows + refunded_outside_minor`` is checked
after every step (tests.integration.test_outside_refund_failures._state).

Before revision 0032 the failure was netted from every reading, also from the one Stripe
made after it (3500 - 2000): such orders ended on 3000, and an order delivering that
reading before the failure lost it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from sqlalchemy import func, inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.money import Money
from persistence.outside_refund_failed import OutsideFailure
from persistence.payment_store import PaymentStore
from persistence.provider_refund_store import ProviderRefundStore
from persistence.refund_store import RefundStore
from persistence.tables import outbox, outside_refund_failures
from tests.integration.test_outside_refund_failures import (
    Paid,
    _begin_own,
    _finish_own,
    _paid,
    _payment_event,
    _state,
)
from tests.support.attempt_migrations import migrate

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Reading:
    """Stripe's ``charge.refunded``: ``amount_refunded`` as Stripe made it at ``at``."""

    minor: int
    at: int


@dataclass(frozen=True)
class Failure:
    """Stripe's ``refund.failed`` of the Dashboard refund made at ``made`` and failed at
    ``at``."""

    refund: str
    minor: int
    made: int
    at: int


FIRST = Reading(3_000, 10)
BOTH = Reading(5_000, 20)
FAILED = Failure("re_d2", 2_000, made=20, at=30)
AFTER = Reading(3_500, 40)
HELD_OUTSIDE = 3_500


async def deliver(stores: ProviderRefundStore, paid: Paid, fact: Reading | Failure) -> None:
    if isinstance(fact, Reading):
        await stores.absorb(
            paid.payment_id,
            provider_reference=paid.charge,
            provider_refunded_minor=fact.minor,
            event=lambda view, _failed: _payment_event(view),
            reading_at=fact.at,
        )
        return
    result, _ = await stores.outside_refund_failed(
        provider="stripe",
        provider_reference=f"{fact.refund}_{paid.charge}",  # a refund of this charge
        charge_reference=paid.charge,
        amount=Money(fact.minor, "EUR"),
        event=_payment_event,
        made_at=fact.made,
        failed_at=fact.at,
    )
    assert result is not OutsideFailure.MISMATCH


async def outbox_rows(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(outbox))).scalar_one())


async def test_every_order_ends_on_what_stripe_holds_and_retries_change_nothing(
    engine: AsyncEngine, store: PaymentStore, clock
):
    stores = ProviderRefundStore(store.writes, clock)
    ended: dict[tuple[object, ...], int] = {}
    facts: list[Reading | Failure] = [FIRST, BOTH, FAILED, AFTER]
    for order in itertools.permutations(facts):
        paid = await _paid(store)
        failure_recorded = False
        for fact in order:
            await deliver(stores, paid, fact)
            failure_recorded = failure_recorded or fact is FAILED
            _, _, outside, _ = await _state(engine, paid.payment_id)
            if failure_recorded:
                # Stripe made every reading before delivering any: once the failure is
                # known, the failed 2000 is never counted, whatever arrives.
                assert outside <= HELD_OUTSIDE, order
        ended[order] = (await _state(engine, paid.payment_id))[2]
        events = await outbox_rows(engine)
        for fact in order:  # Stripe delivers each again
            await deliver(stores, paid, fact)
        assert (await _state(engine, paid.payment_id))[2] == ended[order], order
        assert await outbox_rows(engine) == events, order
    assert set(ended.values()) == {HELD_OUTSIDE}, ended


async def test_a_reading_in_the_failures_second_is_netted_and_the_next_one_corrects_it(
    engine: AsyncEngine, store: PaymentStore, clock
):
    """Stripe's times are whole seconds: a reading made in the second the refund failed may
    or may not still count it, so it is netted (less counted, never more); a reading a
    second later is taken whole."""
    stores = ProviderRefundStore(store.writes, clock)
    paid = await _paid(store)
    await deliver(stores, paid, FIRST)
    await deliver(stores, paid, BOTH)
    await deliver(stores, paid, FAILED)
    assert await _state(engine, paid.payment_id) == ("partially_refunded", 3_000, 3_000, 0)
    await deliver(stores, paid, Reading(3_500, FAILED.at))  # 500 more, in the same second
    assert await _state(engine, paid.payment_id) == ("partially_refunded", 3_000, 3_000, 0)
    await deliver(stores, paid, Reading(3_500, FAILED.at + 1))
    assert await _state(engine, paid.payment_id) == ("partially_refunded", 3_500, 3_500, 0)


async def test_a_later_reading_kept_for_a_failure_takes_paygates_refunds_as_they_stand(
    engine: AsyncEngine, store: PaymentStore, clock
):
    """paygate's refund of 1000 is in flight (reserved) when Stripe's reading made after the
    failure (counting it: 3500 outside + 1000) arrives before the failure: the failure falls
    to that reading less the reservation, never into paygate's refund, which then lands as
    its own row."""
    stores = ProviderRefundStore(store.writes, clock)
    refund_store = RefundStore(engine, store.writes, clock)
    paid = await _paid(store)
    await deliver(stores, paid, BOTH)
    own = await _begin_own(refund_store, paid, 1_000)
    await deliver(stores, paid, Reading(AFTER.minor + 1_000, AFTER.at))
    assert await _state(engine, paid.payment_id) == ("partially_refunded", 5_000, 5_000, 1_000)
    await deliver(stores, paid, FAILED)
    assert await _state(engine, paid.payment_id) == ("partially_refunded", 3_500, 3_500, 1_000)
    await _finish_own(refund_store, own, "re_own1")
    assert await _state(engine, paid.payment_id) == ("partially_refunded", 4_500, 3_500, 0)
    await deliver(stores, paid, Reading(AFTER.minor + 1_000, AFTER.at))  # again
    await deliver(stores, paid, BOTH)  # late, made while the failed refund stood
    assert await _state(engine, paid.payment_id) == ("partially_refunded", 4_500, 3_500, 0)
    async with engine.connect() as conn:
        (row,) = (await conn.execute(select(outside_refund_failures))).all()
    assert (row.made_unix, row.failed_unix, row.taken_back_minor) == (20, 30, 1_500)


async def test_0032_down_and_up_keeps_the_totals_and_nets_an_untimed_failure_from_every_reading(
    engine: AsyncEngine, store: PaymentStore, clock
):
    stores = ProviderRefundStore(store.writes, clock)
    paid = await _paid(store)
    await deliver(stores, paid, BOTH)
    await deliver(stores, paid, FAILED)
    assert await _state(engine, paid.payment_id) == ("partially_refunded", 3_000, 3_000, 0)

    await migrate(engine, "downgrade", "0031")
    async with engine.connect() as conn:
        columns = await conn.run_sync(
            lambda sync: {
                table: {c["name"] for c in inspect(sync).get_columns(table)}
                for table in ("payments", "outside_refund_failures")
            }
        )
    assert not {"provider_refunded_minor", "provider_refunded_unix"} & columns["payments"]
    assert not {"made_unix", "failed_unix"} & columns["outside_refund_failures"]
    await migrate(engine, "upgrade", "head")
    assert await _state(engine, paid.payment_id) == ("partially_refunded", 3_000, 3_000, 0)

    # The failure lost its times: netted from every reading, as before 0032 (the reading
    # made after it counts 1500 net: less than Stripe holds, never more).
    await deliver(stores, paid, AFTER)
    assert await _state(engine, paid.payment_id) == ("partially_refunded", 3_000, 3_000, 0)
    await deliver(stores, paid, Reading(AFTER.minor + 2_000, AFTER.at + 1))  # 2000 more
    assert await _state(engine, paid.payment_id) == ("partially_refunded", 3_500, 3_500, 0)


@pytest.mark.parametrize("failure_first", [False, True], ids=["reading_first", "failure_first"])
async def test_a_failure_stamped_before_its_refund_is_netted_from_every_reading(
    engine: AsyncEngine, store: PaymentStore, clock, failure_first: bool
):
    """Stripe's clock is many servers': a Dashboard refund that fails at once can carry a
    Refund ``created`` a second after its ``refund.failed`` event's. Such a span says
    nothing of which readings counted it, so the failure is netted from every reading (as
    one without times): taken as the span it reads, no reading would be netted of it, the
    reading made while it stood (5000) would keep the failed 2000 counted for good, and the
    payer could not be refunded it."""
    stores = ProviderRefundStore(store.writes, clock)
    paid = await _paid(store)
    inverted = Failure(FAILED.refund, FAILED.minor, made=BOTH.at, at=BOTH.at - 1)
    facts: list[Reading | Failure] = [FIRST, BOTH]
    facts.insert(0 if failure_first else 2, inverted)
    for fact in facts:
        await deliver(stores, paid, fact)
    assert await _state(engine, paid.payment_id) == ("partially_refunded", 3_000, 3_000, 0)
    await deliver(stores, paid, BOTH)  # again
    assert await _state(engine, paid.payment_id) == ("partially_refunded", 3_000, 3_000, 0)
