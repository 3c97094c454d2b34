"""The stray-charge sweep over the real Stripe adapter (and the official SDK), whose Search API
misses a late charge for 30 minutes, on SQLite and PostgreSQL.

stripe-mock stores nothing, so it cannot hide a charge from search and then show it:
tests.support.stripe_lagging_search keeps the PaymentIntents and Refunds it is sent and
answers the search as Stripe documents it, behind the charges. The adapter declares Stripe's
lag (``status_search_lag``); the sweep keeps the key unverified until that has passed, finds
the charge once search shows it and refunds it through Stripe. On the old code the first "no"
verified the key and the charge was never found.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from consumer.outcome import Outcome
from consumer.stray_charges import StraySweep
from domain.accounts import Account, AccountType
from persistence.payment_store import PaymentStore
from persistence.stray_store import StrayStore
from providers.registry import Providers
from providers.stripe import StripeProvider
from telemetry.metrics import Metrics
from tests.support.builders import create_payment
from tests.support.clock import Clock
from tests.support.stray_setup import (
    charge_under,
    handler_giving_up_after_two_calls,
    unverified_keys,
)
from tests.support.stripe_lagging_search import LaggingStripe

pytestmark = pytest.mark.integration

SETTLE = timedelta(minutes=5)
HIDDEN = timedelta(minutes=30)
PASS_EVERY = timedelta(minutes=2)


@pytest.fixture
def stripe_api(clock: Clock) -> LaggingStripe:
    return LaggingStripe(clock, hidden_for=HIDDEN)


@pytest.fixture
async def stripe_provider(stripe_api: LaggingStripe) -> AsyncIterator[StripeProvider]:
    async with StripeProvider("sk_test_lagging", http_client=stripe_api) as provider:
        yield provider


async def test_a_late_stripe_charge_hidden_from_search_is_found_and_refunded(
    store: PaymentStore, stripe_provider, stripe_api, engine, metrics: Metrics, clock: Clock
):
    sweep = StraySweep(
        store=StrayStore(store.engine, store.writes, clock),
        providers=Providers.of(stripe_provider),
        metrics=metrics,
        settle_after=SETTLE,
        clock=clock,
    )
    handler = handler_giving_up_after_two_calls(store, stripe_provider, clock)
    command = dataclasses.replace(
        create_payment(), payer=Account(AccountType.TOKEN, "pm_card_visa")
    )
    stripe_api.refuse_next = 2  # both calls refused before processing: failed, not charged
    assert await handler.handle(command) is Outcome.FAILED
    closed_at = clock.now
    attempt_key = f"{command.payment_request_id}-a1"
    # A call of the key still in flight reaches Stripe after all and charges.
    charged = await charge_under(stripe_provider, command, attempt_key)
    assert charged.provider_reference in stripe_api.intents

    clock.now += SETTLE + timedelta(minutes=1)
    first = await sweep.run_once()
    assert stripe_api.searches_missing_a_charge == 1  # Stripe's search did not show it
    assert attempt_key in await unverified_keys(engine), "a lagging 'no charge' taken as final"
    assert first.unsettled == 1

    while clock.now < closed_at + SETTLE + stripe_provider.status_search_lag:
        clock.now += PASS_EVERY
        await sweep.run_once()

    (refund,) = stripe_api.refunds.values()
    assert refund["payment_intent"] == charged.provider_reference
    assert refund["amount"] == command.amount.minor_units
    (stray,) = await StrayStore(store.engine, store.writes).all()
    assert (stray["attempt_key"], stray["status"]) == (attempt_key, "reversed")
    assert stray["found_at"] < closed_at + SETTLE + stripe_provider.status_search_lag
