"""A stray PaymentIntent asked to capture at once that Stripe holds in ``requires_capture``
is voided by the stray-charge sweep: the official Stripe SDK against a stand-in that keeps
its PaymentIntents (tests.support.stripe_lagging_search), on SQLite and PostgreSQL.

Stripe documents ``requires_capture`` for a manual capture only and nothing that would
capture such a PaymentIntent later; what ends an uncaptured one is its authorization running
out, days later (canceled, the hold released). So for a key the payment does not stand on,
it is a hold nobody will capture: money held that paygate never recorded, released now by a
void, as a stray manual authorization is. Before, every read of it was "outcome unknown", so
the sweep asked again every pass, counted it unanswered, and the payer's money stayed held
until the hold ran out. A payment's own such PaymentIntent, while the payment waits on it
(pending), is never a candidate, and stays as it is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from consumer import stray_charges
from consumer.outcome import Outcome
from consumer.stray_charges import StraySweep
from domain.status import PaymentStatus
from persistence.payment_store import PaymentStore
from persistence.stray_store import StrayStore
from providers.stripe import StripeProvider
from telemetry.metrics import Metrics
from tests.support.clock import Clock
from tests.support.stray_held_stripe import (
    SETTLE,
    CapturedBeforeTheVoid,
    a_stray_hold,
    a_sweep,
    an_older_release_pass,
    card_payment,
)
from tests.support.stray_setup import handler_giving_up_after_two_calls
from tests.support.stripe_lagging_search import LaggingStripe

pytestmark = pytest.mark.integration


@pytest.fixture
def stripe_api(clock: Clock) -> LaggingStripe:
    api = LaggingStripe(clock, hidden_for=timedelta(0))
    api.holds_captures_at_once = True
    return api


@pytest.fixture
async def stripe_provider(stripe_api: LaggingStripe) -> AsyncIterator[StripeProvider]:
    async with StripeProvider("sk_test_held_stray", http_client=stripe_api) as provider:
        yield provider


@pytest.fixture
def sweep(store: PaymentStore, stripe_provider, metrics: Metrics, clock: Clock) -> StraySweep:
    return a_sweep(StrayStore(store.engine, store.writes, clock), stripe_provider, metrics, clock)


def _count(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, {"provider": "stripe", **labels}) or 0.0


async def test_a_stray_held_for_a_capture_at_once_is_voided(
    store: PaymentStore, stripe_provider, stripe_api, sweep, metrics: Metrics, clock: Clock
):
    command, attempt_key, intent = await a_stray_hold(store, stripe_api, stripe_provider, clock)
    assert (intent["status"], intent["capture_method"]) == ("requires_capture", "automatic_async")

    clock.now += SETTLE + timedelta(minutes=1)
    report = await sweep.run_once()

    assert (report.checked, report.found, report.reversed, report.unanswered) == (1, 1, 1, 0)
    assert intent["status"] == "canceled"  # the hold released
    assert stripe_api.refunds == {}  # nothing was taken, nothing refunded
    (stray,) = await StrayStore(store.engine, store.writes).all()
    assert (stray["attempt_key"], stray["status"]) == (attempt_key, "reversed")
    assert stray["provider_reference"] == intent["id"]
    assert _count(metrics, "paygate_stray_charges_total", result="found") == 1
    assert _count(metrics, "paygate_stray_charges_total", result="reversed") == 1
    assert _count(metrics, "paygate_stray_unanswered_total", reason="provider_error") == 0
    payment = await store.get_payment(command.payment_request_id)
    assert payment is not None
    assert payment.status is PaymentStatus.FAILED
    assert (await sweep.run_once()).checked == 0  # once reversed, never again


async def test_a_pending_payments_own_hold_is_left_alone(
    store: PaymentStore, stripe_provider, stripe_api, sweep, clock: Clock
):
    handler = handler_giving_up_after_two_calls(store, stripe_provider, clock)
    command = card_payment()
    assert await handler.handle(command) is Outcome.PENDING  # held: outcome unknown
    (intent,) = stripe_api.intents.values()

    clock.now += SETTLE + timedelta(minutes=1)
    report = await sweep.run_once()

    assert report.checked == 0  # the payment waits on it: not a candidate
    assert intent["status"] == "requires_capture"
    assert await StrayStore(store.engine, store.writes).all() == []


async def test_a_held_stray_captured_before_its_void_is_refunded_not_left_taken(
    store: PaymentStore, metrics: Metrics, clock: Clock
):
    """Fixed interleaving: the sweep reads the stray PaymentIntent held, and Stripe captures
    it before the void arrives, which Stripe then refuses (payment_intent_unexpected_state).
    The money is taken now: the sweep refunds it (on this pass or the next), never records
    the charge beyond its own reach (``reversal_failed``, for an operator) while a refund
    of it is one call away."""
    stripe_api = CapturedBeforeTheVoid(clock, hidden_for=timedelta(0))
    stripe_api.holds_captures_at_once = True
    async with StripeProvider("sk_test_held_stray", http_client=stripe_api) as stripe_provider:
        strays = StrayStore(store.engine, store.writes, clock)
        sweep = a_sweep(strays, stripe_provider, metrics, clock)
        _, _, intent = await a_stray_hold(store, stripe_api, stripe_provider, clock)

        clock.now += SETTLE + timedelta(minutes=1)
        await sweep.run_once()
        clock.now += timedelta(hours=2)
        await sweep.run_once()

    assert intent["status"] == "succeeded"  # captured: the money is taken
    (stray,) = await StrayStore(store.engine, store.writes).all()
    assert stray["status"] == "reversed"
    assert stripe_api.charge(intent["id"])["amount_refunded"] == intent["amount"]
    assert _count(metrics, "paygate_stray_charges_total", result="reversal_failed") == 0


async def test_a_held_stray_an_older_release_voided_under_the_refund_key_is_refunded_once(
    store: PaymentStore, metrics: Metrics, clock: Clock, monkeypatch: pytest.MonkeyPatch
):
    """Fixed interleaving: a release before voids had a key of their own sent the stray
    hold's void under ``<attempt key>-reversal``, and Stripe captured the hold just before
    (the void refused). Stripe binds that key to the cancel endpoint, so every refund under
    it is answered ``idempotency_error``: before, each pass counted the reversal unanswered
    and the money stayed taken until Stripe forgot the key, a day later. Stripe lists no
    refund under the key and the charge keeps its whole amount, so no refund under it can
    have returned money: the charge is refunded under a key of its own, once."""
    stripe_api = CapturedBeforeTheVoid(clock, hidden_for=timedelta(0))
    stripe_api.holds_captures_at_once = True
    async with StripeProvider("sk_test_held_stray", http_client=stripe_api) as stripe_provider:
        strays = StrayStore(store.engine, store.writes, clock)
        sweep = a_sweep(strays, stripe_provider, metrics, clock)
        _, attempt_key, intent = await a_stray_hold(store, stripe_api, stripe_provider, clock)

        # The older release: its void under the key its refunds use.
        await an_older_release_pass(sweep, clock, monkeypatch, refunds_past_the_void=True)
        clock.now += timedelta(hours=2)
        await sweep.run_once()
        clock.now += timedelta(hours=2)
        assert (await sweep.run_once()).checked == 0  # once reversed, never again

    assert intent["status"] == "succeeded"  # captured: the money was taken
    (stray,) = await StrayStore(store.engine, store.writes).all()
    assert stray["status"] == "reversed"
    (refund,) = stripe_api.refunds.values()  # refunded once
    assert refund["amount"] == intent["amount"]
    assert refund["metadata"]["paygateRefundKey"] == f"{attempt_key}-reversal-{intent['amount']}"
    assert stray["reversal_key"] == refund["metadata"]["paygateRefundKey"]
    assert stray_charges.attempt_of_reversal(str(stray["reversal_key"])) == attempt_key
    assert stripe_api.charge(intent["id"])["amount_refunded"] == intent["amount"]
    assert _count(metrics, "paygate_stray_charges_total", result="reversal_failed") == 0
