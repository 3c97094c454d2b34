"""A stray charge's claim is renewed before every call to the provider, each call within
the provider timeout and so within the lease (``PAYGATE_CLAIM_LEASE_S`` must exceed
``PAYGATE_PROVIDER_TIMEOUT_S``): however many calls a try makes in a row, no other sweeper
can take the claim over while one of them is on its way.

The official Stripe SDK against the stand-in that keeps its PaymentIntents and Refunds
(tests.support.stripe_lagging_search), the store on SQLite and PostgreSQL, the interleaving
fixed by hand. The stray capture's whole-amount reversal key was used by an older release's
void, so Stripe refuses the refund under it and the sweep asks two questions before
refunding under the key past the void (``StraySweep._refund_past_a_void``): the refunds
listed under the refused key, then the charge. Each takes less than the provider timeout;
together they take longer than the lease.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import pytest

from consumer.stray_charges import StraySweep, reversal_key_past_a_void
from persistence.payment_store import PaymentStore
from persistence.stray_store import StrayCandidate, StrayStore
from providers.call_gate import GatedProvider
from providers.registry import Providers
from providers.stripe import StripeProvider
from telemetry.metrics import Metrics
from tests.integration.test_stray_reversal_claim import (
    REFUNDS,
    Interleaved,
    a_stray_capture_left_unanswered,
    reversed_once,
)
from tests.support.clock import Clock
from tests.support.stray_held_stripe import (
    SETTLE,
    CapturedBeforeTheVoid,
    Hook,
    a_stray_hold,
    an_older_release_pass,
    run_first_hook,
)

pytestmark = pytest.mark.integration

LEASE = timedelta(seconds=30)
# Each call below takes less than this (a valid configuration: the lease exceeds it).
PROVIDER_TIMEOUT = timedelta(seconds=20)


class Hooked(CapturedBeforeTheVoid):
    """Stripe, with hooks run once each, in the order added: ``before`` a request whose
    (method, path) starts with a hook's, before Stripe receives it (the request on its way),
    ``after`` one once Stripe has answered it. ``received``: every request, in order."""

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
        super().__init__(store.engine, store.writes, clock, claim_lease=LEASE)
        self._read = read

    async def candidates(self, settled_before: datetime, limit: int) -> list[StrayCandidate]:
        return self._read


def a_sweep(
    strays: StrayStore, stripe_provider: StripeProvider, metrics: Metrics, clock: Clock
) -> StraySweep:
    """No re-try pause: the re-try stamp holds nothing back, only the claim does."""
    return StraySweep(
        store=strays,
        providers=Providers.of(stripe_provider),
        metrics=metrics,
        settle_after=SETTLE,
        clock=clock,
        recheck_first=timedelta(0),
        recheck_cap=timedelta(0),
    )


async def test_no_other_sweeper_calls_stripe_while_the_second_of_two_questions_is_on_its_way(
    store: PaymentStore, metrics: Metrics, clock: Clock, monkeypatch: pytest.MonkeyPatch
):
    """The sweeper asks about refunds under the refused key (19 s), then reads the charge;
    12 s into that read, past the lease counted from the renewal before the first question,
    another sweeper tries the stray charge. It must send nothing: the first holds the claim
    (before, it had renewed once for both questions, and the other took the claim over and
    called Stripe while the first's read was on its way). One refund, under the key past the
    void, recorded by the first."""
    stripe_api = Hooked(clock)
    stripe_api.holds_captures_at_once = True
    async with StripeProvider("sk_test_stray_renewals", http_client=stripe_api) as stripe:
        older = a_sweep(StrayStore(store.engine, store.writes, clock), stripe, metrics, clock)
        await a_stray_hold(store, stripe_api, stripe, clock)
        # An older release voided under the whole-amount reversal key (refused: captured
        # just before) and left the refund Stripe then refused under that key unanswered.
        await an_older_release_pass(older, clock, monkeypatch, refunds_past_the_void=False)
        assert stripe_api.refunds == {}

        clock.now += timedelta(hours=2)
        read = await StrayStore(store.engine, store.writes, clock).candidates(clock(), 10)
        assert len(read) == 1
        first = a_sweep(ReadTogether(store, clock, read), stripe, metrics, clock)
        other = a_sweep(ReadTogether(store, clock, read), stripe, metrics, clock)
        sent_by_the_other: list[tuple[str, str]] = []
        other_reports: list[Any] = []

        async def first_question_answered() -> None:
            clock.now += timedelta(seconds=19)  # the question took 19 s

        async def second_question_on_its_way() -> None:
            clock.now += timedelta(seconds=12)  # 12 s into the read, 31 s after the renewal
            assert timedelta(seconds=12) < PROVIDER_TIMEOUT
            before = len(stripe_api.received)
            other_reports.append(await other.run_once())
            sent_by_the_other.extend(stripe_api.received[before:])

        async def whole_amount_refused() -> None:
            # The refund under the refused key came back refused: the two questions follow.
            stripe_api.after.append((("get", "/v1/refunds"), first_question_answered))
            stripe_api.before.append((("get", "/v1/payment_intents/"), second_question_on_its_way))

        stripe_api.after.append((("post", "/v1/refunds"), whole_amount_refused))
        report = await first.run_once()

        assert sent_by_the_other == []
        (other_report,) = other_reports
        assert (other_report.claimed, other_report.reversed) == (1, 0)
        assert report.reversed == 1
        (refund,) = stripe_api.refunds.values()
        (candidate,) = read
        assert refund["metadata"]["paygateRefundKey"] == reversal_key_past_a_void(candidate)
        (stray,) = await StrayStore(store.engine, store.writes).all()
        assert (stray["status"], stray["reversal_reference"]) == ("reversed", refund["id"])


class WatchedGate(asyncio.Semaphore):
    """The process's provider-call gate; ``waiting`` is set once a caller waits for a
    place."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.waiting = asyncio.Event()

    async def acquire(self) -> Literal[True]:
        if self.locked():
            self.waiting.set()
        return await super().acquire()


async def test_a_sweeper_waiting_for_a_place_at_the_provider_calls_only_if_it_still_holds(
    store: PaymentStore, metrics: Metrics, clock: Clock
):
    """The consumer's calls share a gate (``PAYGATE_MAX_PROVIDER_CALLS``, providers.call_gate).
    A sweeper waits there for a place, the gate full of the process's other calls (each
    within the provider timeout) for longer than the lease; another sweeper (another process)
    takes the claim over and sends the refund. While that refund is on its way, the first
    gets its place: it must not call Stripe (before, it had renewed its claim before it
    waited, not once it had its place, and asked Stripe about the refund while the other was
    sending it). One refund, recorded by the other."""
    stripe_api = Interleaved(clock)
    async with StripeProvider("sk_test_stray_gate", http_client=stripe_api) as stripe:
        await a_stray_capture_left_unanswered(store, stripe_api, stripe, clock)
        (intent,) = stripe_api.intents.values()
        clock.now += timedelta(minutes=1)
        gate = WatchedGate(1)
        gated = Providers.of(GatedProvider(stripe, gate))
        first = StraySweep(
            store=StrayStore(store.engine, store.writes, clock, claim_lease=LEASE),
            providers=gated,
            metrics=metrics,
            settle_after=SETTLE,
            clock=clock,
            recheck_first=timedelta(0),
            recheck_cap=timedelta(0),
        )
        other = a_sweep(
            StrayStore(store.engine, store.writes, clock, claim_lease=LEASE),
            stripe,
            metrics,
            clock,
        )
        occupying, free = asyncio.Event(), asyncio.Event()

        async def occupy_the_gate() -> None:
            occupying.set()
            await free.wait()

        # Another call of the first sweeper's process holds the gate's one place.
        stripe_api.before.append((("get", "/v1/payment_intents/"), occupy_the_gate))
        occupier = asyncio.create_task(gated.get("stripe").charge_by_reference(intent["id"]))
        await occupying.wait()
        first_task = asyncio.create_task(first.run_once())
        await gate.waiting.wait()
        clock.now += LEASE + timedelta(seconds=1)

        sent_meanwhile: list[tuple[str, str]] = []

        async def the_first_gets_its_place() -> None:
            before = len(stripe_api.received)
            free.set()
            await asyncio.gather(occupier, first_task)
            sent_meanwhile.extend(stripe_api.received[before:])

        stripe_api.before.append((REFUNDS, the_first_gets_its_place))
        other_report = await other.run_once()

        # The occupier's read of the charge, and nothing from the first sweeper.
        assert sent_meanwhile == [("get", f"/v1/payment_intents/{intent['id']}")]
        assert first_task.result().reversed == 0
        assert other_report.reversed == 1
        assert stripe_api.received.count(REFUNDS) == 2  # the refused one, then the other's
        await reversed_once(store, stripe_api)
