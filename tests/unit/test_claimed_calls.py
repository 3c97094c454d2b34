"""consumer.claimed_calls: a call under a claim goes out on its place at the gate, the claim
renewed after the place was taken unless a fresh confirmation covers the call.

The monotonic clock is injected and moved by hand; nothing waits for real.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from consumer.claimed_calls import ClaimTakenOver, HeldClaim
from providers.call_gate import a_place_at
from providers.registry import Providers
from tests.support.scripted_provider import ScriptedProvider

pytestmark = pytest.mark.unit

LEASE = timedelta(seconds=30)


class Ticks:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class Renewals:
    def __init__(self) -> None:
        self.made = 0
        self.owner = True

    async def __call__(self) -> bool:
        self.made += 1
        return self.owner


class Sends:
    def __init__(self) -> None:
        self.made = 0

    async def __call__(self) -> str:
        self.made += 1
        return f"answer {self.made}"


def provider():
    return Providers.of(ScriptedProvider()).gated(1).get("scripted")


def held(ticks: Ticks, renewals: Renewals, *, confirmed: bool = True) -> HeldClaim:
    claim = HeldClaim(renewals, LEASE, ticks=ticks)
    if confirmed:
        claim.confirmed(claim.mark())
    return claim


async def test_a_fresh_confirmation_covers_one_call_without_a_renewal():
    ticks, renewals, sends = Ticks(), Renewals(), Sends()
    claim = held(ticks, renewals)
    ticks.now += LEASE.total_seconds() / 3 - 0.001

    assert await claim.call(provider(), sends) == "answer 1"

    assert (sends.made, renewals.made) == (1, 0)


async def test_every_call_after_the_first_renews():
    """A question then a re-send: the question spent the confirmation."""
    ticks, renewals, sends = Ticks(), Renewals(), Sends()
    claim = held(ticks, renewals)
    at = provider()

    await claim.call(at, sends)
    await claim.call(at, sends)
    await claim.call(at, sends)

    assert (sends.made, renewals.made) == (3, 2)


async def test_a_confirmation_a_third_of_the_lease_old_is_renewed():
    ticks, renewals, sends = Ticks(), Renewals(), Sends()
    claim = held(ticks, renewals)
    ticks.now += LEASE.total_seconds() / 3

    await claim.call(provider(), sends)

    assert (sends.made, renewals.made) == (1, 1)


async def test_an_unconfirmed_claim_is_renewed_before_its_first_call():
    ticks, renewals, sends = Ticks(), Renewals(), Sends()

    await held(ticks, renewals, confirmed=False).call(provider(), sends)

    assert (sends.made, renewals.made) == (1, 1)


async def test_a_claim_taken_over_sends_nothing():
    ticks, renewals, sends = Ticks(), Renewals(), Sends()
    claim = held(ticks, renewals, confirmed=False)
    renewals.owner = False

    with pytest.raises(ClaimTakenOver):
        await claim.call(provider(), sends)

    assert (sends.made, renewals.made) == (0, 1)


async def test_a_write_that_must_precede_the_call_confirms_it_instead_of_a_renewal():
    """A re-send's stamp: made whatever the freshness, and no renewal besides it."""
    ticks, renewals, sends = Ticks(), Renewals(), Sends()
    stamps = Renewals()
    claim = held(ticks, renewals)

    await claim.call(provider(), sends, confirm=stamps)
    stamps.owner = False
    with pytest.raises(ClaimTakenOver):
        await claim.call(provider(), sends, confirm=stamps)

    assert (sends.made, stamps.made, renewals.made) == (1, 2, 0)


async def test_the_renewal_follows_the_wait_for_the_place():
    """The gate full: the claim is renewed once the place is taken, not before the wait
    (which is bounded by no lease), and the wait itself makes a fresh confirmation stale
    once it has lasted a third of the lease."""
    ticks, renewals, sends = Ticks(), Renewals(), Sends()
    at = provider()
    claim = held(ticks, renewals)
    free = asyncio.Event()
    placed = asyncio.Event()

    async def another_call() -> None:
        async with a_place_at(at):
            placed.set()
            await free.wait()

    occupier = asyncio.create_task(another_call())
    await placed.wait()
    calling = asyncio.create_task(claim.call(at, sends))
    for _ in range(5):
        await asyncio.sleep(0)
    assert (sends.made, renewals.made) == (0, 0)  # waiting for the place
    ticks.now += LEASE.total_seconds()
    free.set()

    assert await calling == "answer 1"
    assert (sends.made, renewals.made) == (1, 1)
    await occupier
