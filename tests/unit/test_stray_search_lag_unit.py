"""The stray-charge sweep against a provider whose status search lags behind its charges
(declared ``status_search_lag``), with a fake of its records; and the rule itself
(domain/search_lag.py).

A "no charge" is final only once the attempt was closed more than the settle time plus the
lag ago: before, the key is left unverified, stamped to be asked again no later than then,
and an open attempt is closed (which starts the count). A charge found is acted on at once.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from consumer.stray_charges import StraySweep
from domain.money import Money
from domain.search_lag import no_charge_final_at, no_charge_is_final
from domain.status import PaymentStatus
from persistence.stray_store import StrayCandidate
from providers.registry import Providers
from tests.support.fake_stores import FakeStrayRecords
from tests.support.scripted_provider import ScriptedProvider, charged, declined, refunded

pytestmark = pytest.mark.unit

SETTLE = timedelta(minutes=5)
LAG = timedelta(hours=1)


@pytest.fixture
def provider() -> ScriptedProvider:
    lagging = ScriptedProvider()
    lagging.status_search_lag = LAG
    return lagging


@pytest.fixture
def records(db, clock):
    return FakeStrayRecords(db, clock)


@pytest.fixture
def sweep(records, provider, metrics, clock):
    return StraySweep(
        store=records,
        providers=Providers.of(provider),
        metrics=metrics,
        settle_after=SETTLE,
        clock=clock,
    )


def closed(clock, ago: timedelta, **changes) -> StrayCandidate:
    listed = StrayCandidate(
        "pay_1-a1",
        "pay_1",
        "scripted",
        Money(1_050, "EUR"),
        PaymentStatus.FAILED,
        None,
        attempt_created_at=clock.now - ago,
        attempt_finished_at=clock.now - ago,
    )
    return dataclasses.replace(listed, **changes)


@pytest.mark.parametrize("answer", [None, declined()], ids=["no-charge", "declined"])
async def test_a_no_inside_the_lag_is_not_final_and_the_key_is_asked_again_by_its_end(
    sweep, records, provider, clock, metrics, answer
):
    listed = closed(clock, SETTLE + timedelta(minutes=1))
    records.unexamined.append(listed)
    provider.script("charge_status", answer)

    report = await sweep.run_once()

    assert (report.checked, report.unsettled, report.verified) == (1, 1, 0)
    # Counted for the dashboard under its own reason, which the alert leaves out.
    assert (
        metrics.registry.get_sample_value(
            "paygate_stray_unanswered_total",
            {"provider": listed.provider, "reason": "search_lag"},
        )
        == 1
    )
    assert records.verified == []
    assert listed.attempt_finished_at is not None
    final_at = listed.attempt_finished_at + SETTLE + LAG
    assert clock.now < records.ask_again[listed.attempt_key] <= final_at


async def test_a_no_once_the_lag_has_passed_is_final(sweep, records, provider, clock):
    listed = closed(clock, SETTLE + LAG)
    records.unexamined.append(listed)
    provider.script("charge_status", None)

    report = await sweep.run_once()

    assert (report.unsettled, report.verified) == (0, 1)
    assert records.verified == [listed.attempt_key]


async def test_an_attempt_left_open_is_closed_not_verified(sweep, records, provider, clock):
    listed = closed(clock, timedelta(days=3), attempt_finished_at=None)
    records.unexamined.append(listed)
    provider.script("charge_status", None)

    report = await sweep.run_once()

    assert report.unsettled == 1
    assert records.verified == []
    # Closed now: its count starts from here, however old the attempt.
    (now_closed,) = records.unexamined
    assert now_closed.attempt_finished_at == clock.now


async def test_a_charge_found_inside_the_lag_is_reversed_at_once(sweep, records, provider, clock):
    listed = closed(clock, SETTLE + timedelta(minutes=1))
    records.unexamined.append(listed)
    provider.script("charge_status", charged("ch_stray"))
    provider.script("charge_by_reference", charged("ch_stray"))
    provider.script("refund", refunded("re_reversal"))

    report = await sweep.run_once()

    assert (report.found, report.reversed, report.unsettled) == (1, 1, 0)


async def test_the_payments_own_charge_found_inside_the_lag_is_verified_at_once(
    sweep, records, provider, clock
):
    listed = closed(
        clock, timedelta(minutes=1), payment_status=PaymentStatus.SUCCEEDED, payment_reference="ch"
    )
    records.unexamined.append(listed)
    provider.script("charge_status", charged("ch"))

    report = await sweep.run_once()

    assert (report.verified, report.unsettled) == (1, 0)


def test_the_rule() -> None:
    charge_by = datetime(2026, 12, 1, tzinfo=UTC)
    assert no_charge_final_at(charge_by, LAG) == charge_by + LAG
    assert not no_charge_is_final(charge_by, charge_by + LAG - timedelta(seconds=1), LAG)
    assert no_charge_is_final(charge_by, charge_by + LAG, LAG)
    # A key that may still charge: only a provider without lag answers for good.
    assert not no_charge_is_final(None, charge_by, LAG)
    assert no_charge_is_final(None, charge_by, timedelta(0))
    with pytest.raises(ValueError, match="never negative"):
        no_charge_final_at(charge_by, -LAG)
