"""The provider call gate: at most ``limit`` calls in flight across every gated provider."""

from __future__ import annotations

import asyncio

import pytest

from domain.accounts import Account, AccountType
from providers.call_gate import GatedProvider, a_place_at
from providers.charge_only import ChargeOnlyProvider
from providers.circuit_breaker import CircuitBreakerProvider
from providers.port import ChargeOutcome, ChargeRequest, ChargeStatus, PaymentProvider
from providers.registry import Providers
from tests.support.builders import PAYEE_IBAN, SUCCESS_CARD
from tests.support.builders import create_payment as payment_command

pytestmark = pytest.mark.unit


class HeldProvider(ChargeOnlyProvider):
    """Charges only when the test lets it; counts the calls inside it at once."""

    def __init__(self, name: str, release: asyncio.Event, inside: list[int]) -> None:
        super().__init__()
        self._name = name
        self._release = release
        self._inside = inside
        self.started = 0

    @property
    def name(self) -> str:
        return self._name

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        self.started += 1
        self._inside[0] += 1
        self._inside[1] = max(self._inside[1], self._inside[0])
        try:
            await self._release.wait()
        finally:
            self._inside[0] -= 1
        return ChargeOutcome(ChargeStatus.SUCCEEDED, f"ref-{request.attempt_key}")


def _request(n: int) -> ChargeRequest:
    command = payment_command()
    return ChargeRequest(
        attempt_key=f"key-{n}",
        payment_request_id=command.payment_request_id,
        amount=command.amount,
        payment_method=command.payment_method,
        # The accounts as the consumer reveals them for the provider call.
        payer=Account(AccountType.CARD, SUCCESS_CARD),
        payee=Account(AccountType.IBAN, PAYEE_IBAN),
        metadata={},
        capture=True,
    )


async def _settle() -> None:
    # Let every runnable task run until none can go further (no timers involved).
    for _ in range(20):
        await asyncio.sleep(0)


async def test_calls_beyond_the_limit_wait_across_all_providers_and_all_finish() -> None:
    release = asyncio.Event()
    inside = [0, 0]  # now, most at once
    first, second = HeldProvider("one", release, inside), HeldProvider("two", release, inside)
    gated = Providers.of(first, second).gated(3)
    calls = [
        asyncio.create_task(gated.get("one" if n % 2 else "two").charge(_request(n)))
        for n in range(8)
    ]
    await _settle()
    assert inside[0] == 3  # three in, five waiting at the gate
    assert first.started + second.started == 3
    release.set()
    outcomes = await asyncio.gather(*calls)
    assert all(outcome.status is ChargeStatus.SUCCEEDED for outcome in outcomes)
    assert first.started + second.started == 8
    assert inside == [0, 3]


async def test_a_cancelled_call_frees_its_place() -> None:
    release = asyncio.Event()
    inside = [0, 0]
    gated = Providers.of(HeldProvider("one", release, inside)).gated(1)
    holder = asyncio.create_task(gated.get("one").charge(_request(1)))
    waiter = asyncio.create_task(gated.get("one").charge(_request(2)))
    await _settle()
    assert inside[0] == 1
    holder.cancel()
    await _settle()
    assert inside[0] == 1  # the waiter took the freed place
    release.set()
    assert (await waiter).status is ChargeStatus.SUCCEEDED
    assert holder.cancelled()


def test_the_gated_registry_keeps_names_and_refuses_a_limit_below_one() -> None:
    release, inside = asyncio.Event(), [0, 0]
    providers = Providers.of(HeldProvider("one", release, inside))
    assert list(providers.gated(5)) == ["one"]
    assert providers.gated(5).get("one").name == "one"
    with pytest.raises(ValueError, match="at least 1"):
        providers.gated(0)


async def test_a_place_taken_ahead_holds_the_gate_and_its_call_takes_no_other() -> None:
    """``a_place_at``: the block waits for a place like a call; the call made in it goes
    through on that place (with a limit of 1 a second place would never come), and the
    place is freed when the block ends."""
    release = asyncio.Event()
    inside = [0, 0]
    provider = Providers.of(HeldProvider("one", release, inside)).gated(1).get("one")
    await _a_place_ahead_waits_and_its_call_takes_no_other(provider, provider, release)
    assert inside == [0, 1]
    assert (await provider.charge(_request(2))).status is ChargeStatus.SUCCEEDED  # freed


async def test_a_place_at_an_ungated_provider_is_nothing_to_wait_for() -> None:
    release, inside = asyncio.Event(), [0, 0]
    release.set()
    provider = Providers.of(HeldProvider("one", release, inside)).get("one")
    async with a_place_at(provider):
        assert (await provider.charge(_request(1))).status is ChargeStatus.SUCCEEDED


async def test_a_task_started_inside_a_place_waits_for_a_place_of_its_own() -> None:
    """A task created in the block copies its context, mark of the place included; the place
    is the block's task's, so the new task's call waits for a place like any other (with a
    limit of 1: until the block ends), instead of going through beyond the limit."""
    release = asyncio.Event()
    release.set()
    inside = [0, 0]
    held = HeldProvider("one", release, inside)
    provider = Providers.of(held).gated(1).get("one")

    async with a_place_at(provider):
        child = asyncio.create_task(provider.charge(_request(1)))
        await _settle()
        assert held.started == 0  # waiting for a place: the block holds the only one
        assert (await provider.charge(_request(2))).status is ChargeStatus.SUCCEEDED
    assert (await child).status is ChargeStatus.SUCCEEDED
    assert held.started == 2
    assert inside == [0, 1]


async def test_a_place_is_taken_at_a_gate_under_another_wrapper() -> None:
    """The gate is found through any wrappers (here a circuit breaker around the gated
    provider): the block waits for a place like a call, and its call, through the breaker,
    takes no second one (with a limit of 1 it would never come)."""
    release = asyncio.Event()
    inside = [0, 0]
    gated = GatedProvider(HeldProvider("one", release, inside), asyncio.Semaphore(1))
    wrapped = CircuitBreakerProvider(gated)
    await _a_place_ahead_waits_and_its_call_takes_no_other(wrapped, gated, release)
    assert inside == [0, 1]


async def _a_place_ahead_waits_and_its_call_takes_no_other(
    provider: PaymentProvider, holder_of_the_place: PaymentProvider, release: asyncio.Event
) -> None:
    """A call through ``holder_of_the_place`` holds the gate's one place; a block taking a
    place ahead at ``provider`` waits for it, as a call does; once the place is free the
    block's call through ``provider`` goes out on it (a second place would never come)."""
    in_the_block = asyncio.Event()

    async def ahead() -> ChargeOutcome:
        async with a_place_at(provider):
            in_the_block.set()
            return await provider.charge(_request(1))

    holder = asyncio.create_task(holder_of_the_place.charge(_request(0)))
    await _settle()
    block = asyncio.create_task(ahead())
    await _settle()
    assert not in_the_block.is_set()  # waits for the place, as a call does
    release.set()
    assert (await holder).status is ChargeStatus.SUCCEEDED
    assert (await asyncio.wait_for(block, 5)).status is ChargeStatus.SUCCEEDED
    assert in_the_block.is_set()
