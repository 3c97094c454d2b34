"""The model-based test's watch over stray charges' reversal claims
(tests.support.stray_claim_watch): each check it makes fails on the claim broken the way it
is there to catch, and holds on the claim working."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from persistence.claims import Claim
from tests.support.clock import Clock
from tests.support.stray_claim_watch import StrayClaimWatch

pytestmark = pytest.mark.unit

LEASE = timedelta(seconds=30)
KEY = "pay-1-a1"


def watch() -> tuple[StrayClaimWatch, Clock]:
    clock = Clock()
    clock.now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    return StrayClaimWatch(clock, LEASE), clock


def claim(clock: Clock, token: str) -> Claim:
    return Claim(token, clock() + LEASE)


def test_a_claim_taken_while_anothers_lease_runs_is_a_violation() -> None:
    claims, clock = watch()
    claims.took(KEY, claim(clock, "first"), "found")
    clock.now += LEASE - timedelta(seconds=1)
    claims.took(KEY, claim(clock, "second"), "claimed")
    (violation,) = claims.violations
    assert "claim taken (claimed)" in violation


def test_a_claim_taken_once_the_lease_ran_out_or_given_up_is_not() -> None:
    claims, clock = watch()
    claims.took(KEY, claim(clock, "first"), "found")
    clock.now += LEASE
    claims.took(KEY, claim(clock, "second"), "claimed")
    claims.released(KEY, "second")
    claims.took(KEY, claim(clock, "third"), "claimed")
    claims.took(KEY, None, "claimed")  # refused by the store: nothing taken
    assert claims.violations == []
    assert claims.taken_over == 1


def test_a_fenced_write_by_a_sweeper_taken_over_is_a_violation() -> None:
    claims, clock = watch()
    claims.took(KEY, claim(clock, "zombie"), "found")
    clock.now += LEASE
    claims.took(KEY, claim(clock, "holder"), "claimed")
    claims.wrote(KEY, "zombie", False, "recorded")  # refused, as it must be
    assert claims.violations == []
    claims.wrote(KEY, "zombie", True, "recorded")
    (violation,) = claims.violations
    assert "recorded by a sweeper whose claim was taken over" in violation


def test_a_write_after_the_claim_was_given_up_is_a_violation() -> None:
    claims, clock = watch()
    claims.took(KEY, claim(clock, "first"), "found")
    claims.wrote(KEY, "first", True, "recorded")  # the record releases the claim
    claims.wrote(KEY, "first", True, "its reversal key noted")
    (violation,) = claims.violations
    assert "whose claim was given up" in violation


async def test_an_expired_holder_nobody_replaced_still_writes() -> None:
    claims, clock = watch()
    claims.took(KEY, claim(clock, "slow"), "found")
    clock.now += LEASE * 3
    claims.wrote(KEY, "slow", True, "its re-try stamped")
    claims.renewed(KEY, "slow", True)
    assert claims.violations == []


async def test_each_renewal_licenses_one_call_about_the_reversal() -> None:
    claims, clock = watch()
    claims.took(KEY, claim(clock, "holder"), "found")
    claims.renewed(KEY, "holder", True)
    claims.calling("alpha.refund", f"{KEY}-reversal")
    assert claims.violations == []
    claims.calling("alpha.refund_status", f"{KEY}-reversal")
    (violation,) = claims.violations
    assert "sent without the claim renewed first" in violation
    claims.calling("alpha.charge_status", KEY)  # not about a reversal: no claim needed
    assert len(claims.violations) == 1


async def test_a_call_under_a_claim_taken_over_since_its_renewal_is_a_violation() -> None:
    claims, clock = watch()
    claims.took(KEY, claim(clock, "first"), "found")
    clock.now += LEASE
    claims.renewed(KEY, "first", True)

    async def the_other_takes_over_first() -> None:
        claims.took(KEY, claim(clock, "second"), "claimed")

    # A renewal the store granted to a token it had given to another meanwhile.
    await asyncio.create_task(the_other_takes_over_first())
    claims.calling("alpha.charge_by_reference", None)
    assert any("sent by a sweeper whose claim is not live" in v for v in claims.violations)
