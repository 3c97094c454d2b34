"""consumer.retrying: which refusals are sent again, after which wait, and when to stop.

The sleep is injected and records the waits, so the schedule is checked exactly and nothing
waits for real.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from consumer.claimed_calls import HeldClaim
from consumer.retrying import ClaimLost, GaveUp, call_with_retries
from domain.retry import RetryPolicy
from providers.call_gate import a_place_at
from providers.errors import (
    ProviderRateLimitedError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    UnsupportedOperationError,
)
from providers.registry import Providers
from tests.support.scripted_provider import ScriptedProvider

pytestmark = pytest.mark.unit

# Jitter keeps each wait in the upper half of its step: [0.5, 1.0] then [1.0, 2.0].
POLICY = RetryPolicy(max_attempts=3, base_delay_s=1.0, max_delay_s=10.0)


class Calls:
    """A call that gives its scripted answers in order, and what the loop did around it."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.made = 0
        self.sleeps: list[float] = []
        self.ownership_checks = 0
        self.owner = True

    async def __call__(self):
        self.made += 1
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    async def still_owner(self) -> bool:
        self.ownership_checks += 1
        return self.owner

    def claim(self) -> HeldClaim:
        """The claim as a first send finds it: written just before (fresh)."""
        held = HeldClaim(self.still_owner, timedelta(seconds=30))
        held.confirmed(held.mark())
        return held


async def run(calls: Calls, policy: RetryPolicy = POLICY):
    return await call_with_retries(
        calls,
        at=Providers.of(ScriptedProvider()).gated(1).get("scripted"),
        policy=policy,
        claim=calls.claim(),
        sleep=calls.sleep,
    )


def unavailable() -> ProviderUnavailableError:
    return ProviderUnavailableError("p", "503")


async def test_an_answer_is_returned_at_once_without_a_wait_or_an_ownership_check():
    calls = Calls("answer")

    assert await run(calls) == "answer"

    assert (calls.made, calls.sleeps, calls.ownership_checks) == (1, [], 0)


async def test_a_refusal_that_certainly_did_not_arrive_is_retried_after_the_back_off():
    calls = Calls(unavailable(), unavailable(), "answer")

    assert await run(calls) == "answer"

    assert calls.made == 3
    first, second = calls.sleeps
    assert 0.5 <= first <= 1.0
    assert 1.0 <= second <= 2.0
    assert calls.ownership_checks == 2  # before every re-send, after its wait


async def test_the_providers_retry_after_is_the_least_wait():
    calls = Calls(ProviderRateLimitedError("p", "slow down", retry_after=7.0), "answer")

    assert await run(calls) == "answer"

    assert calls.sleeps == [7.0]


async def test_retries_used_up_give_up_with_the_last_refusal():
    last = ProviderRateLimitedError("p", "still down", retry_after=0.0)
    calls = Calls(unavailable(), unavailable(), last)

    answer = await run(calls)

    assert isinstance(answer, GaveUp)
    assert answer.error is last
    assert (calls.made, len(calls.sleeps)) == (3, 2)


async def test_a_claim_lost_during_the_wait_stops_before_sending_again():
    calls = Calls(unavailable(), "never asked")
    calls.owner = False

    assert isinstance(await run(calls), ClaimLost)

    assert calls.made == 1


@pytest.mark.parametrize(
    "error",
    [ProviderTimeoutError("p", "may have arrived"), UnsupportedOperationError("p", "no")],
    ids=["outcome-unknown", "not-retriable"],
)
async def test_a_refusal_that_may_have_arrived_or_will_not_change_reaches_the_caller(error):
    calls = Calls(error)

    with pytest.raises(type(error)):
        await run(calls)

    assert (calls.made, calls.sleeps) == (1, [])


async def test_the_claim_is_checked_once_the_re_send_has_its_place_at_the_provider():
    """The wait for a place at the provider's call gate is bounded by no lease: the claim is
    renewed after it, right before the re-send, not before it."""
    provider = Providers.of(ScriptedProvider()).gated(1).get("scripted")
    calls = Calls(unavailable(), "answer")
    free = asyncio.Event()
    placed = asyncio.Event()

    async def another_call() -> None:
        async with a_place_at(provider):
            placed.set()
            await free.wait()

    async def sleep(seconds: float) -> None:
        calls.sleeps.append(seconds)
        occupier.append(asyncio.create_task(another_call()))
        await placed.wait()

    occupier: list[asyncio.Task[None]] = []
    retrying = asyncio.create_task(
        call_with_retries(calls, at=provider, policy=POLICY, claim=calls.claim(), sleep=sleep)
    )
    for _ in range(5):
        await asyncio.sleep(0)
    assert (calls.made, calls.ownership_checks) == (1, 0)  # waiting for the place
    free.set()
    assert await retrying == "answer"
    assert (calls.made, calls.ownership_checks) == (2, 1)
    await occupier[0]
