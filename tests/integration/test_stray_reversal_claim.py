"""One sweeper at a time sends a stray charge's reversal: two sweepers (two consumer
processes) on the same stray Stripe charge, the official Stripe SDK against the stand-in
that keeps its PaymentIntents and Refunds (tests.support.stripe_lagging_search), the store on
SQLite and PostgreSQL, every interleaving fixed by hand.

The sweeps run with no re-try pause (``recheck_first`` and ``recheck_cap`` 0), so the
re-try stamp, a timing window, holds nothing back: what keeps a second sweeper from sending
is the stray charge's claim (consumer.stray_charges), or nothing.

Each starts from a stray capture whose first reversal Stripe refused before processing
(429): recorded, its reversal key noted, nothing at Stripe, its claim free.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest

from consumer.outcome import Outcome
from consumer.stray_charges import StraySweep
from persistence.payment_store import PaymentStore
from persistence.stray_store import StrayCandidate, StrayStore
from providers.port import ChargeStatus
from providers.registry import Providers
from providers.stripe import StripeProvider
from telemetry.metrics import Metrics
from tests.support.clock import Clock
from tests.support.stray_held_stripe import SETTLE, Hook, card_payment, run_first_hook
from tests.support.stray_setup import charge_under, handler_giving_up_after_two_calls
from tests.support.stripe_lagging_search import LaggingStripe

pytestmark = pytest.mark.integration

# Past the store's claim lease (30 s by default), as a dead or hung sweeper's runs out.
PAST_THE_LEASE = timedelta(minutes=1)
REFUNDS = ("post", "/v1/refunds")


class Interleaved(LaggingStripe):
    """Stripe, with hooks run once each, in the order added: ``before`` a request whose
    (method, path) starts with a hook's before Stripe receives it (the request on its way),
    ``after`` one once Stripe has answered it (the answer on its way back). ``received``:
    every request Stripe received, in order."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock, hidden_for=timedelta(0))
        self.received: list[tuple[str, str]] = []
        self.before: list[tuple[tuple[str, str], Hook]] = []
        self.after: list[tuple[tuple[str, str], Hook]] = []

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        call = (method, urlsplit(url).path)
        await run_first_hook(self.before, call)
        self.received.append(call)
        answer = await super().request_async(method, url, headers, post_data)
        await run_first_hook(self.after, call)
        return answer


class ReadTogether(StrayStore):
    """The store as a sweeper that read its candidates together with another one sees it."""

    def __init__(self, store: PaymentStore, clock: Clock, read: list[StrayCandidate]) -> None:
        super().__init__(store.engine, store.writes, clock)
        self._read = read

    async def candidates(self, settled_before: datetime, limit: int) -> list[StrayCandidate]:
        return self._read


def a_sweep(
    strays: StrayStore, stripe: StripeProvider, metrics: Metrics, clock: Clock
) -> StraySweep:
    return StraySweep(
        store=strays,
        providers=Providers.of(stripe),
        metrics=metrics,
        settle_after=SETTLE,
        clock=clock,
        recheck_first=timedelta(0),
        recheck_cap=timedelta(0),
    )


async def a_stray_capture_left_unanswered(
    store: PaymentStore, stripe_api: Interleaved, stripe: StripeProvider, clock: Clock
) -> str:
    """A stray capture found, its refund refused by Stripe before processing: the attempt
    key."""
    metrics = Metrics()
    # The payment fails after both its calls were refused before processing (its attempt
    # closed as not charged); then a late call of its attempt's key captures.
    handler = handler_giving_up_after_two_calls(store, stripe, clock)
    command = card_payment()
    stripe_api.refuse_next = 2
    assert await handler.handle(command) is Outcome.FAILED
    attempt_key = f"{command.payment_request_id}-a1"
    assert (await charge_under(stripe, command, attempt_key)).status is ChargeStatus.SUCCEEDED

    async def refused() -> None:
        stripe_api.refuse_next = 1

    stripe_api.before.append((REFUNDS, refused))
    clock.now += SETTLE + timedelta(minutes=1)
    report = await a_sweep(
        StrayStore(store.engine, store.writes, clock), stripe, metrics, clock
    ).run_once()
    assert (report.found, report.unanswered) == (1, 1)
    assert stripe_api.refunds == {}
    (stray,) = await StrayStore(store.engine, store.writes).all()
    assert (stray["status"], stray["reversal_key"]) == ("reversing", f"{attempt_key}-reversal")
    return attempt_key


def unanswered(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "paygate_stray_reversals_unanswered_total", {"provider": "stripe", "reason": reason}
    )
    return value or 0.0


async def reversed_once(store: PaymentStore, stripe_api: Interleaved) -> dict[str, Any]:
    """The money outcome: one refund at Stripe, of the whole charge, and the stray charge
    recorded reversed by it. The refund."""
    (refund,) = stripe_api.refunds.values()
    (intent,) = stripe_api.intents.values()
    assert (refund["status"], refund["amount"]) == ("succeeded", intent["amount"])
    (stray,) = await StrayStore(store.engine, store.writes).all()
    assert (stray["status"], stray["reversal_reference"]) == ("reversed", refund["id"])
    return refund


async def test_of_two_sweepers_that_read_a_stray_charge_together_one_sends(
    store: PaymentStore, metrics: Metrics, clock: Clock
):
    """(a) Both read the candidate; one claims it and is asking Stripe when the other
    tries: the other sends nothing at all (before, it asked, read the charge and refunded
    it, the noted key's compare-and-set its only fence)."""
    stripe_api = Interleaved(clock)
    async with StripeProvider("sk_test_stray_claim", http_client=stripe_api) as stripe:
        await a_stray_capture_left_unanswered(store, stripe_api, stripe, clock)
        clock.now += timedelta(minutes=1)
        read = await StrayStore(store.engine, store.writes, clock).candidates(clock(), 10)
        ahead = a_sweep(ReadTogether(store, clock, read), stripe, metrics, clock)
        behind = a_sweep(ReadTogether(store, clock, read), stripe, metrics, clock)
        sent_by_the_other: list[tuple[str, str]] = []
        reports: list[Any] = []

        async def the_other_tries() -> None:
            before = len(stripe_api.received)
            reports.append(await behind.run_once())
            sent_by_the_other.extend(stripe_api.received[before:])

        # Right after the first answer to the one that claimed (its question about the
        # refund under the noted key).
        stripe_api.after.append((("get", "/v1/refunds"), the_other_tries))
        report = await ahead.run_once()

        assert sent_by_the_other == []
        (other_report,) = reports
        assert (other_report.reversed, report.reversed) == (0, 1)
        assert unanswered(metrics, "claimed") == 1
        await reversed_once(store, stripe_api)


async def test_a_sweeper_whose_lease_ran_out_mid_send_records_nothing(
    store: PaymentStore, metrics: Metrics, clock: Clock
):
    """(b) A sweeper's refund is on its way to Stripe past its claim's lease; another
    takes the claim over and sends the refund (under the same key). The first one's answer
    comes back while the other's is still on its way: it is not recorded (before, it was,
    over the reversal another sweeper was carrying out); the one holding the claim records.
    Stripe refunds once."""
    stripe_api = Interleaved(clock)
    async with StripeProvider("sk_test_stray_claim", http_client=stripe_api) as stripe:
        await a_stray_capture_left_unanswered(store, stripe_api, stripe, clock)
        clock.now += timedelta(minutes=1)
        first = a_sweep(StrayStore(store.engine, store.writes, clock), stripe, metrics, clock)
        second = a_sweep(StrayStore(store.engine, store.writes, clock), stripe, metrics, clock)
        second_sending, first_done = asyncio.Event(), asyncio.Event()
        taking_over: list[asyncio.Task[Any]] = []

        async def first_on_its_way() -> None:
            clock.now += PAST_THE_LEASE
            taking_over.append(asyncio.create_task(second.run_once()))
            await second_sending.wait()

        async def second_on_its_way() -> None:
            second_sending.set()
            await first_done.wait()

        stripe_api.before += [(REFUNDS, first_on_its_way), (REFUNDS, second_on_its_way)]
        first_report = await first.run_once()
        first_done.set()
        (task,) = taking_over
        second_report = await task

        assert stripe_api.received.count(REFUNDS) == 3  # the refused one, then both
        assert (first_report.reversed, first_report.unanswered) == (0, 1)
        assert unanswered(metrics, "concurrent") == 1
        assert second_report.reversed == 1
        await reversed_once(store, stripe_api)


@pytest.mark.parametrize(
    "dies",
    [
        # Having claimed the stray charge, before its first call reaches Stripe.
        "before_sending",
        # Once Stripe made the refund, its answer never recorded.
        "before_recording",
    ],
)
async def test_a_sweeper_dying_with_the_claim_holds_the_others_off_until_its_lease_ends(
    store: PaymentStore, metrics: Metrics, clock: Clock, dies: str
):
    """(c) A sweeper takes the claim and dies (hangs for good) before its refund is sent,
    or after Stripe made it and before its answer is recorded. Another sweeper sends
    nothing while the claim's lease lasts (before, it went ahead at once); after it, it
    takes the claim and reverses the charge: one refund, never two, nothing left
    unreversed."""
    stripe_api = Interleaved(clock)
    async with StripeProvider("sk_test_stray_claim", http_client=stripe_api) as stripe:
        await a_stray_capture_left_unanswered(store, stripe_api, stripe, clock)
        clock.now += timedelta(minutes=1)
        dying = a_sweep(StrayStore(store.engine, store.writes, clock), stripe, metrics, clock)
        other = a_sweep(StrayStore(store.engine, store.writes, clock), stripe, metrics, clock)
        dead, never = asyncio.Event(), asyncio.Event()

        async def die() -> None:
            dead.set()
            await never.wait()

        if dies == "before_sending":
            stripe_api.before.append((("get", "/"), die))  # its first call: a question
        else:
            stripe_api.after.append((REFUNDS, die))
        task = asyncio.create_task(dying.run_once())
        try:
            await dead.wait()
            expected_refunds = 0 if dies == "before_sending" else 1
            assert len(stripe_api.refunds) == expected_refunds

            clock.now += timedelta(seconds=10)  # within the lease
            before = len(stripe_api.received)
            report = await other.run_once()
            assert stripe_api.received[before:] == []
            assert report.reversed == 0
            (stray,) = await StrayStore(store.engine, store.writes).all()
            assert stray["status"] == "reversing"

            clock.now += PAST_THE_LEASE
            report = await other.run_once()
            assert report.reversed == 1
            await reversed_once(store, stripe_api)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        # Gone for good: what it held changes nothing now.
        await reversed_once(store, stripe_api)
