"""The stray-charge sweep never takes a lagging search's "no charge" as final, on SQLite and
PostgreSQL.

A payment fails with its attempt closed as not charged; a call of that key, still in flight,
lands and charges after all. The provider's status search (as Stripe's, which can trail
charges by up to an hour) does not show that charge for 30 minutes. Before the fix, the sweep
asked once the attempt had settled (5 minutes), heard "no charge", marked the key verified and
never asked again: the money stayed taken, unseen. Now the key stays unverified until the
provider's declared lag has passed since the last call of it could land, is asked again
meanwhile (a charge that shows early is reversed early), and is found and reversed.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from consumer.outcome import Outcome
from consumer.stray_charges import StraySweep, SweepReport
from persistence.payment_store import PaymentStore
from persistence.stray_store import StrayStore
from providers.registry import Providers
from providers.sandbox import InProcessSandboxProvider
from telemetry.metrics import Metrics
from tests.support.builders import UNAVAILABLE_CARD, create_payment
from tests.support.clock import Clock
from tests.support.lagging_search import LaggingSearchProvider
from tests.support.stray_setup import (
    charge_under,
    handler_giving_up_after_two_calls,
    unverified_keys,
)

pytestmark = pytest.mark.integration

SETTLE = timedelta(minutes=5)
LAG = timedelta(hours=1)  # what the provider declares
HIDDEN = timedelta(minutes=30)  # how long its search really hides the late charge
# Passes as the consumer runs them, on the test's clock: far more than needed to pass the lag.
PASS_EVERY = timedelta(minutes=2)
PASSES = 60


@pytest.fixture
def lagging(provider: InProcessSandboxProvider, clock: Clock) -> LaggingSearchProvider:
    return LaggingSearchProvider(provider, clock, hidden_for=HIDDEN, declared=LAG)


@pytest.fixture
def sweep(store: PaymentStore, lagging, metrics: Metrics, clock: Clock) -> StraySweep:
    return StraySweep(
        store=StrayStore(store.engine, store.writes, clock),
        providers=Providers.of(lagging),
        metrics=metrics,
        settle_after=SETTLE,
        clock=clock,
    )


async def _failed_with_a_late_charge(store, lagging, clock) -> tuple[str, str]:
    """A payment failed (its attempt closed as not charged), then the in-flight call of its
    key charges: (attempt key, charge reference)."""
    handler = handler_giving_up_after_two_calls(store, lagging, clock)
    command = create_payment(payer_number=UNAVAILABLE_CARD)
    assert await handler.handle(command) is Outcome.FAILED
    attempt_key = f"{command.payment_request_id}-a1"
    late = create_payment(order_id=command.order_id, idempotency_key=command.idempotency_key)
    charged = await charge_under(lagging, late, attempt_key)
    assert charged.provider_reference is not None
    return attempt_key, charged.provider_reference


async def _passes(sweep: StraySweep, clock: Clock, count: int) -> SweepReport:
    """``count`` passes, ``PASS_EVERY`` apart; their reports summed."""
    total = SweepReport()
    for _ in range(count):
        clock.now += PASS_EVERY
        report = await sweep.run_once()
        for name, value in vars(report).items():
            setattr(total, name, getattr(total, name) + value)
    return total


async def test_a_late_charge_the_search_hides_for_half_an_hour_is_found_and_reversed(
    store, lagging, provider, sweep, engine, clock
):
    closed_at = clock.now
    attempt_key, reference = await _failed_with_a_late_charge(store, lagging, clock)

    clock.now += SETTLE + timedelta(minutes=1)
    first = await sweep.run_once()
    # Asked once settled, and the search says "no charge" -- not final within the lag.
    assert lagging.hidden_answers == 1
    assert attempt_key in await unverified_keys(engine), "a lagging 'no charge' taken as final"
    assert (first.checked, first.unsettled, first.verified) == (1, 1, 0)

    report = await _passes(sweep, clock, PASSES)

    assert (report.found, report.reversed) == (1, 1)
    (refund,) = await provider.acquirer.refunds()
    assert refund.charge_id == reference
    (stray,) = await StrayStore(store.engine, store.writes).all()
    assert (stray["attempt_key"], stray["status"]) == (attempt_key, "reversed")
    # Found soon after the search showed it, not held back until the lag was over.
    assert stray["found_at"] < closed_at + SETTLE + LAG


async def test_a_key_without_a_charge_is_verified_only_once_the_lag_has_passed(
    store, lagging, sweep, engine, clock
):
    handler = handler_giving_up_after_two_calls(store, lagging, clock)
    command = create_payment(payer_number=UNAVAILABLE_CARD)
    assert await handler.handle(command) is Outcome.FAILED
    closed_at = clock.now
    attempt_key = f"{command.payment_request_id}-a1"

    while clock.now < closed_at + SETTLE + LAG - PASS_EVERY:
        await _passes(sweep, clock, 1)
        assert attempt_key in await unverified_keys(engine)
    # Asked again when the lag has passed, though its back-off alone would wait longer.
    report = await _passes(sweep, clock, 2)
    assert report.verified == 1
    assert attempt_key not in await unverified_keys(engine)
    assert (await _passes(sweep, clock, 1)).checked == 0  # and never asked again


async def test_keys_waiting_out_the_lag_do_not_starve_a_newer_one(
    store, lagging, sweep, engine, clock
):
    handler = handler_giving_up_after_two_calls(store, lagging, clock)
    waiting = []
    for _ in range(3):
        command = create_payment(payer_number=UNAVAILABLE_CARD)
        assert await handler.handle(command) is Outcome.FAILED
        waiting.append(f"{command.payment_request_id}-a1")
    clock.now += SETTLE + timedelta(minutes=1)
    for _ in range(3):  # a page of one: each pass asks one key, stamped behind the others
        assert (await sweep.run_once(limit=1)).unsettled == 1

    late_key, _ = await _failed_with_a_late_charge(store, lagging, clock)
    clock.now += SETTLE + timedelta(minutes=1) + HIDDEN
    report = await sweep.run_once(limit=1)
    # The newest key comes first (never asked), though three wait for their lag.
    assert (report.checked, report.found, report.reversed) == (1, 1, 1)
    (stray,) = await StrayStore(store.engine, store.writes).all()
    assert stray["attempt_key"] == late_key
    assert sorted(waiting) == await unverified_keys(engine)
