"""Two sweepers (two consumer processes) reverse the same stray Stripe charge whose
whole-amount reversal key an older release's void used: the official Stripe SDK against the
stand-in that keeps its PaymentIntents and Refunds (tests.support.stripe_lagging_search), the
store on SQLite and PostgreSQL.

Each sweeper read the stray charge (and the reversal key noted for it) in the same moment.
One refunds it under the key past the void (``<attempt key>-reversal-<amount>``), Stripe
answering ``pending``; the other, acting on what it read before, must not write another key
over the one whose refund is in flight: the sweep asks the provider about the noted key
only, and a charge whose ``amount_refunded`` counts the pending refund would be recorded
reversed, and the refund's failure later never seen.

The same holds for one sweeper whose refund under the key past the void is on its way
longer than the sweep waits: the next pass sends the whole again under that key, never back
under the refused one, and a ``refund.failed`` of it finds the stray charge even when that
pass recorded it reversed from the charge.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest

from consumer.stray_charges import StraySweep, reversal_key_past_a_void
from persistence.payment_store import PaymentStore
from persistence.stray_store import LateReversalFailure, StrayCandidate, StrayStore
from providers.stripe import StripeProvider
from telemetry.metrics import Metrics
from tests.support.clock import Clock
from tests.support.stray_held_stripe import (
    CapturedBeforeTheVoid,
    a_stray_hold,
    a_sweep,
    an_older_release_pass,
)
from tests.support.stripe_lagging_search import LaggingStripe

pytestmark = pytest.mark.integration


class ReadTogether(StrayStore):
    """The store as a sweeper that read its candidates together with another one sees it."""

    def __init__(self, store: PaymentStore, clock: Clock, read: list[StrayCandidate]) -> None:
        super().__init__(store.engine, store.writes, clock)
        self._read = read

    async def candidates(self, settled_before: datetime, limit: int) -> list[StrayCandidate]:
        return self._read


@pytest.mark.parametrize(
    "overtaken_after",
    [
        # It reads the charge keeping its whole amount, and would write its own key (the
        # whole amount's, refused) over the one of the refund in flight.
        "charge",
        # It finds no refund under the key it read, then reads the charge, whose
        # amount_refunded counts the other's pending refund, and would record it reversed.
        "refunds",
    ],
)
async def test_a_sweeper_behind_another_never_acts_over_its_refund_in_flight(
    store: PaymentStore,
    metrics: Metrics,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
    overtaken_after: str,
):
    stripe_api = CapturedBeforeTheVoid(clock, hidden_for=timedelta(0))
    stripe_api.read = overtaken_after
    stripe_api.holds_captures_at_once = True
    async with StripeProvider("sk_test_stray_race", http_client=stripe_api) as stripe_provider:

        def sweeper(strays: StrayStore) -> StraySweep:
            return a_sweep(strays, stripe_provider, metrics, clock)

        sweep = sweeper(StrayStore(store.engine, store.writes, clock))
        _, _, intent = await a_stray_hold(store, stripe_api, stripe_provider, clock)

        # An older release: its void under the refund's key, refused (captured just before),
        # and the refund under that key refused by Stripe, left unanswered.
        await an_older_release_pass(sweep, clock, monkeypatch, refunds_past_the_void=False)
        assert intent["status"] == "succeeded"
        assert stripe_api.refunds == {}

        # Two sweepers read the stray charge at once; the one behind reads the charge
        # before the other's refund, and acts on it after.
        clock.now += timedelta(hours=2)
        read = await StrayStore(store.engine, store.writes, clock).candidates(clock(), 10)
        ahead, behind = (
            sweeper(ReadTogether(store, clock, read)),
            sweeper(ReadTogether(store, clock, read)),
        )
        stripe_api.refunds_answered = "pending"
        stripe_api.after_next_read = ahead.run_once
        await behind.run_once()

        (refund,) = stripe_api.refunds.values()  # refunded once, pending
        (candidate,) = read
        assert refund["metadata"]["paygateRefundKey"] == reversal_key_past_a_void(candidate)
        (stray,) = await StrayStore(store.engine, store.writes).all()
        # The key of the refund in flight stays noted: the sweep asks about it first.
        assert stray["reversal_key"] == reversal_key_past_a_void(candidate)

        # A later pass while it is pending leaves it under way, never reversed.
        clock.now += timedelta(hours=2)
        await sweep.run_once()
        (stray,) = await StrayStore(store.engine, store.writes).all()
        assert stray["status"] == "reversing"

        # The card network fails it: the money is taken again, and an operator is told.
        stripe_api.fail_refund(refund["id"])
        clock.now += timedelta(hours=2)
        await sweep.run_once()
        (stray,) = await StrayStore(store.engine, store.writes).all()
        assert stray["status"] == "failed"


class RefundsLandLate(CapturedBeforeTheVoid):
    """``before_refund``: by idempotency key, what happens once before Stripe receives a
    refund sent under it (the request still on its way), given that request; ``land`` makes
    Stripe receive a request at once (its sender still waiting for the answer)."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock, hidden_for=timedelta(0))
        self.before_refund: dict[str, Callable[..., Awaitable[object]]] = {}

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        refund = (method, urlsplit(url).path) == ("post", "/v1/refunds")
        meanwhile = self.before_refund.pop(headers.get("Idempotency-Key") or "", None)
        if refund and meanwhile is not None:
            await meanwhile(method, url, headers, post_data)
        return await super().request_async(method, url, headers, post_data)

    async def land(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any
    ) -> object:
        return await LaggingStripe.request_async(self, method, url, headers, post_data)


async def test_a_refund_past_a_void_on_its_way_is_never_lost_to_the_refused_key(
    store: PaymentStore, metrics: Metrics, clock: Clock, monkeypatch: pytest.MonkeyPatch
):
    """Fixed interleaving: a sweeper's refund under the key past the void is on its way to
    Stripe longer than the sweep waits before trying again. The next pass finds no refund
    under that key and the charge keeping its whole amount: it refunds the whole again.
    Under the refused key (``<attempt key>-reversal``), noted over the key of the refund on
    its way, Stripe answers idempotency_error, the refund on its way lands, and nothing asks
    about it again: read from the charge, it was recorded reversed, and its failure later
    left the money taken. Under the key past the void again, Stripe answers the same refund
    to both."""
    stripe_api = RefundsLandLate(clock)
    stripe_api.holds_captures_at_once = True
    async with StripeProvider("sk_test_stray_late", http_client=stripe_api) as stripe_provider:
        strays = StrayStore(store.engine, store.writes, clock)
        sweep = a_sweep(strays, stripe_provider, metrics, clock)
        _, attempt_key, intent = await a_stray_hold(store, stripe_api, stripe_provider, clock)

        await an_older_release_pass(sweep, clock, monkeypatch, refunds_past_the_void=False)
        (intent,) = stripe_api.intents.values()
        refused = f"{attempt_key}-reversal"
        past_the_void = f"{refused}-{intent['amount']}"  # reversal_key_past_a_void's

        async def on_its_way(*request: Any) -> None:
            # Past the sweep's wait: the next pass runs, and the refund lands meanwhile.
            clock.now += timedelta(hours=2)

            async def lands(*_: Any) -> None:
                await stripe_api.land(*request)

            stripe_api.before_refund[refused] = lands
            stripe_api.before_refund[past_the_void] = lands
            await sweep.run_once()

        stripe_api.refunds_answered = "pending"
        stripe_api.before_refund[past_the_void] = on_its_way
        clock.now += timedelta(hours=2)
        await sweep.run_once()

        (refund,) = stripe_api.refunds.values()  # refunded once, pending
        assert refund["metadata"]["paygateRefundKey"] == past_the_void
        clock.now += timedelta(hours=2)
        await sweep.run_once()
        (stray,) = await StrayStore(store.engine, store.writes).all()
        assert stray["status"] == "reversing"  # pending: never recorded reversed
        stripe_api.fail_refund(refund["id"])
        clock.now += timedelta(hours=2)
        await sweep.run_once()
        (stray,) = await StrayStore(store.engine, store.writes).all()
        assert stray["status"] == "failed"  # the money taken again: for an operator


async def test_a_reversal_landing_after_the_sweep_asked_about_it_fails_for_an_operator(
    store: PaymentStore, metrics: Metrics, clock: Clock, monkeypatch: pytest.MonkeyPatch
):
    """Fixed interleaving: the refund under the key past the void is on its way longer than
    the sweep waits; the next pass finds none under that key, Stripe receives it, and the
    pass reads the charge, whose ``amount_refunded`` counts it pending: nothing kept,
    recorded reversed (under the charge's reference, that refund's key still noted). When
    Stripe fails that refund later, its ``refund.failed`` must move the stray charge to
    ``failed`` for an operator: before, it matched the reversal's reference only, found
    none, and the money stayed taken with nothing telling."""
    stripe_api = RefundsLandLate(clock)
    stripe_api.holds_captures_at_once = True
    async with StripeProvider("sk_test_stray_late", http_client=stripe_api) as stripe_provider:
        strays = StrayStore(store.engine, store.writes, clock)
        sweep = a_sweep(strays, stripe_provider, metrics, clock)
        _, attempt_key, intent = await a_stray_hold(store, stripe_api, stripe_provider, clock)

        await an_older_release_pass(sweep, clock, monkeypatch, refunds_past_the_void=False)
        (intent,) = stripe_api.intents.values()
        past_the_void = f"{attempt_key}-reversal-{intent['amount']}"

        async def on_its_way(*request: Any) -> None:
            clock.now += timedelta(hours=2)

            async def lands() -> None:
                await stripe_api.land(*request)

            stripe_api.read, stripe_api.after_next_read = "refunds", lands
            await sweep.run_once()

        stripe_api.refunds_answered = "pending"
        stripe_api.before_refund[past_the_void] = on_its_way
        clock.now += timedelta(hours=2)
        await sweep.run_once()

        (refund,) = stripe_api.refunds.values()
        assert refund["metadata"]["paygateRefundKey"] == past_the_void
        (stray,) = await strays.all()
        assert stray["status"] == "reversed"  # from the charge, which counts it pending
        assert stray["reversal_key"] == past_the_void

        failed = stripe_api.fail_refund(refund["id"])
        assert (
            await strays.reversal_failed_later(
                attempt_key,
                "stripe",
                reversal_key=failed["metadata"]["paygateRefundKey"],
                reversal_reference=failed["id"],
                error="the provider failed the reversal refund",
            )
            is LateReversalFailure.RECORDED
        )
        (stray,) = await strays.all()
        assert stray["status"] == "failed"
