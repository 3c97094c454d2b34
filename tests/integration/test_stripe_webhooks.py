"""Stripe's webhook events through the facade's real application, verified by the official
SDK and recorded on real databases (SQLite and PostgreSQL).

The Stripe side is tests.support.stripe_lagging_search, served to the real Stripe adapter as
its HTTP client: it keeps the PaymentIntents it is sent and answers the Search API behind
them, here for longer than the stray-charge sweep waits for Stripe's search (its settle
time plus ``status_search_lag``, 2 h) -- an incident running past Stripe's documented hour.
Events are the PaymentIntents it holds, as Stripe renders them, signed by hand as Stripe
documents (tests.support.stripe_events).

- A charge under a key the payment left (the call of a failed payment that landed late):
  Stripe's ``payment_intent.succeeded`` hands the key to the sweep, which keeps asking
  until search shows the charge, then refunds it. Without the event (the old code had no
  Stripe endpoint: 404), the sweep's "no charge" became final once its wait was over and
  the charge, shown later, was never found.
- The payment's own attempt in doubt (Stripe charged, its answer was lost): the event
  records the outcome at once; a replay changes nothing; forged, stale, tampered,
  another amount's events change nothing.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from pydantic import SecretStr
from sqlalchemy import select

from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.provider_notices import NoticeRecorder
from consumer.stray_charges import RECHECK_CAP, StraySweep
from domain.accounts import Account, AccountType
from domain.payments import CreatePayment
from domain.status import PaymentStatus
from persistence.payment_store import PaymentStore
from persistence.provider_refund_store import ProviderRefundStore
from persistence.stray_store import StrayStore
from persistence.tables import outbox, provider_attempts
from providers.registry import Providers
from providers.stripe import StripeProvider
from providers.stripe.webhooks import StripeWebhooks
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import create_payment
from tests.support.clock import Clock
from tests.support.facade_world import World, world_app
from tests.support.metric_samples import sample_sum
from tests.support.stray_setup import (
    charge_under,
    handler_giving_up_after_two_calls,
    unverified_keys,
)
from tests.support.stripe_events import OTHER_SECRET, SECRET, event, headers
from tests.support.stripe_lagging_search import LaggingStripe

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()
SETTLE = timedelta(minutes=5)
# Longer than the sweep waits for Stripe's search (SETTLE + 2 h).
HIDDEN = timedelta(hours=3)
PASS_EVERY = timedelta(minutes=10)
ACKNOWLEDGED = {"received": True}


@dataclass
class Rig:
    stripe_api: LaggingStripe
    stripe: StripeProvider
    handler: PaymentCommandHandler
    sweep: StraySweep
    strays: StrayStore
    url: str


@pytest.fixture
async def rig(store: PaymentStore, metrics: Metrics, clock: Clock) -> AsyncIterator[Rig]:
    stripe_api = LaggingStripe(clock, hidden_for=HIDDEN)
    stripe = StripeProvider("sk_test_lagging", http_client=stripe_api)
    await stripe.start()
    strays = StrayStore(store.engine, store.writes, clock)
    facade = TestServer(
        world_app(
            World(),
            notice_readers={"stripe": StripeWebhooks(secret=SecretStr(SECRET), livemode=False)},
            notice_sink=NoticeRecorder(
                store=store,
                events=PaymentEvents(MESSAGES, "payments.results"),
                strays=strays,
                refunds=ProviderRefundStore(store.writes, clock),
                clock=clock,
            ),
        )
    )
    await facade.start_server()
    sweep = StraySweep(
        store=strays,
        providers=Providers.of(stripe),
        metrics=metrics,
        settle_after=SETTLE,
        clock=clock,
    )
    handler = handler_giving_up_after_two_calls(store, stripe, clock)
    try:
        yield Rig(
            stripe_api,
            stripe,
            handler,
            sweep,
            strays,
            str(facade.make_url("/v1/notifications/stripe")),
        )
    finally:
        await stripe.stop()
        await facade.close()


def card_payment() -> CreatePayment:
    return dataclasses.replace(create_payment(), payer=Account(AccountType.TOKEN, "pm_card_visa"))


async def post(rig: Rig, body: bytes, **signing) -> tuple[int, object]:
    """Posts ``body`` as Stripe does, signed (``secret``, ``at``) unless ``signature``
    replaces the header; the answer's status and JSON body."""
    sent = headers(body, signing.pop("secret", SECRET), at=signing.pop("at", None))
    if "signature" in signing:
        sent["Stripe-Signature"] = signing.pop("signature")
    async with ClientSession() as session, session.post(rig.url, data=body, headers=sent) as resp:
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


async def result_statuses(store: PaymentStore, payment_id: str) -> list[PaymentStatus]:
    async with store.engine.connect() as conn:
        payloads = (await conn.execute(select(outbox.c.payload))).scalars().all()
    events = [MESSAGES.decode_result(p) for p in payloads]
    return [e.status for e in events if e.payment_request_id == payment_id]


async def test_a_charge_stripes_search_shows_after_the_sweeps_wait_is_found_through_its_event(
    rig: Rig, store: PaymentStore, engine, clock: Clock, metrics: Metrics
):
    command = card_payment()
    rig.stripe_api.refuse_next = 2  # both calls refused before processing: failed
    assert await rig.handler.handle(command) is Outcome.FAILED
    closed_at = clock.now
    attempt_key = f"{command.payment_request_id}-a1"
    # A call of the key still in flight reaches Stripe after all and charges; Stripe sends
    # its event at once.
    charged = await charge_under(rig.stripe, command, attempt_key)
    intent_id = charged.provider_reference
    assert intent_id is not None
    body = event("payment_intent.succeeded", rig.stripe_api.intents[intent_id])

    assert await post(rig, body) == (200, ACKNOWLEDGED)

    # Past the wait after which the sweep took Stripe's "no charge" as final, search still
    # does not show the charge: the key the event reopened stays a question.
    lag = rig.stripe.status_search_lag
    while clock.now < closed_at + SETTLE + lag + PASS_EVERY:
        clock.now += PASS_EVERY
        report = await rig.sweep.run_once()
        assert report.verified == 0, "a lagging 'no charge' taken as final"
    assert rig.stripe_api.searches_missing_a_charge > 0
    assert attempt_key in await unverified_keys(engine)
    assert rig.stripe_api.refunds == {}

    # Search shows the charge at last; the sweep asks within its capped pause.
    shown_at = rig.stripe_api.created_at[intent_id] + HIDDEN
    while not rig.stripe_api.refunds and clock.now < shown_at + RECHECK_CAP + PASS_EVERY:
        clock.now += PASS_EVERY
        await rig.sweep.run_once()

    (refund,) = rig.stripe_api.refunds.values()
    assert refund["payment_intent"] == intent_id
    assert refund["amount"] == command.amount.minor_units
    (stray,) = await rig.strays.all()
    assert (stray["attempt_key"], stray["status"]) == (attempt_key, "reversed")
    found = sample_sum(metrics, "paygate_stray_charges_total", provider="stripe", result="found")
    assert found == 1
    failed = await store.get_payment(command.payment_request_id)
    assert failed is not None
    assert failed.status is PaymentStatus.FAILED  # the payment's story is unchanged


async def test_an_event_of_the_attempt_in_doubt_records_it_once_and_forgeries_change_nothing(
    rig: Rig, store: PaymentStore, engine
):
    command = card_payment()
    rig.stripe_api.lose_next = 1  # Stripe charges; its answer is lost: in doubt
    assert await rig.handler.handle(command) is Outcome.PENDING
    payment_id = command.payment_request_id
    (intent,) = rig.stripe_api.intents.values()
    genuine = event("payment_intent.succeeded", intent)
    other_amount = event("payment_intent.succeeded", {**intent, "amount": intent["amount"] + 1})
    genuine_signature = headers(genuine)["Stripe-Signature"]
    tampered = genuine.replace(b'"amount": 1050', b'"amount": 1')
    assert tampered != genuine

    refusals: list[tuple[bytes, dict[str, Any]]] = [
        (genuine, {"signature": ""}),  # unsigned
        (genuine, {"secret": OTHER_SECRET}),  # forged: another endpoint's secret
        (genuine, {"at": int(time.time()) - 600}),  # stale: a captured request replayed
        (tampered, {"signature": genuine_signature}),  # changed after Stripe signed it
        (other_amount, {}),  # signed, but not the payment's amount
    ]
    for body, signing in refusals:
        status, answer = await post(rig, body, **signing)
        assert status == 400, answer
        assert isinstance(answer, dict)
        assert answer["error"]["code"] == "invalid_request"
        assert intent["id"] not in json.dumps(answer), "nothing of the body is echoed"
    pending = await store.get_payment(payment_id)
    assert pending is not None
    assert pending.status is PaymentStatus.PENDING
    assert PaymentStatus.SUCCEEDED not in await result_statuses(store, payment_id)

    assert await post(rig, genuine) == (200, ACKNOWLEDGED)
    assert await post(rig, genuine) == (200, ACKNOWLEDGED)  # Stripe delivers it again

    paid = await store.get_payment(payment_id)
    assert paid is not None
    assert paid.status is PaymentStatus.SUCCEEDED
    assert paid.provider_reference == intent["id"]
    assert (await result_statuses(store, payment_id)).count(PaymentStatus.SUCCEEDED) == 1
    assert await rig.strays.all() == []
    # Nothing was handed to the sweep: the payment stands on this charge.
    assert f"{payment_id}-a1" not in await _reopened(engine)


async def test_events_that_are_not_this_paygates_are_acknowledged_and_change_nothing(
    rig: Rig, store: PaymentStore, engine
):
    not_paygates = {"id": "pi_dashboard", "object": "payment_intent", "amount": 999}
    outside = event(
        "payment_intent.succeeded",
        {**not_paygates, "currency": "eur", "status": "succeeded", "metadata": {}},
    )
    elsewhere = event(
        "payment_intent.succeeded",
        {
            **not_paygates,
            "currency": "eur",
            "status": "succeeded",
            "metadata": {"paygateAttemptKey": "pay_staging0123456789-a1"},
        },
    )
    not_read = event("customer.created", {"id": "cus_1", "object": "customer"})
    for body in (outside, elsewhere, not_read):
        assert await post(rig, body) == (200, ACKNOWLEDGED)
    assert await rig.strays.all() == []
    assert await unverified_keys(engine) == []


async def _reopened(engine) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(provider_attempts.c.attempt_key).where(provider_attempts.c.reopen_count > 0)
        )
        return [row.attempt_key for row in rows]
