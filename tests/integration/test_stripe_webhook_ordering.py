"""Stripe's events late, out of order, again, or in a currency Stripe counts otherwise,
through the facade's real application on real databases (SQLite and PostgreSQL).

Stripe sends each event once it happens, retries it for days and does not keep their
order; an event is the PaymentIntent as it was when the event was made. So a payment the
events recorded must not move again on an older snapshot: once ``succeeded``, a
``payment_failed``, ``canceled`` or ``amount_capturable_updated`` event of the same
attempt (a snapshot from before, or a forged-looking one Stripe did sign) is acknowledged
and changes nothing -- no second result event, no downgrade that would lift the order's
protection against a second payment, and nothing handed to the stray-charge sweep, since
the payment stands on that very charge.

And amounts are read in Stripe's scale: ISK is a two-decimal amount at Stripe (``500`` is
5 krónur, ``multiple of 100``) but has no minor unit in ISO 4217, so an event is the
payment's only when read through providers.stripe.amounts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from pydantic import SecretStr
from sqlalchemy import select

from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.provider_notices import NoticeRecorder
from domain.accounts import Account, AccountType
from domain.money import Money
from domain.payments import CreatePayment
from domain.status import PaymentStatus
from persistence.payment_store import PaymentStore
from persistence.provider_refund_store import ProviderRefundStore
from persistence.stray_store import StrayStore
from persistence.tables import outbox, provider_attempts
from providers.stripe import StripeProvider
from providers.stripe.webhooks import StripeWebhooks
from schemas.payments import PaymentMessages
from tests.support.builders import create_payment
from tests.support.clock import Clock
from tests.support.facade_world import World, world_app
from tests.support.stray_setup import handler_giving_up_after_two_calls
from tests.support.stripe_events import SECRET, event, headers
from tests.support.stripe_lagging_search import LaggingStripe

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()
ACKNOWLEDGED = {"received": True}


@dataclass
class Rig:
    stripe_api: LaggingStripe
    handler: PaymentCommandHandler
    strays: StrayStore
    url: str


@pytest.fixture
async def rig(store: PaymentStore, clock: Clock) -> AsyncIterator[Rig]:
    stripe_api = LaggingStripe(clock, hidden_for=timedelta(0))
    stripe = StripeProvider("sk_test_ordering", http_client=stripe_api)
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
    try:
        yield Rig(
            stripe_api,
            handler_giving_up_after_two_calls(store, stripe, clock),
            strays,
            str(facade.make_url("/v1/notifications/stripe")),
        )
    finally:
        await stripe.stop()
        await facade.close()


def card_payment(amount: Money | None = None) -> CreatePayment:
    return dataclasses.replace(
        create_payment(amount=amount), payer=Account(AccountType.TOKEN, "pm_card_visa")
    )


async def post(rig: Rig, body: bytes) -> tuple[int, object]:
    async with (
        ClientSession() as session,
        session.post(rig.url, data=body, headers=headers(body)) as resp,
    ):
        return resp.status, await resp.json()


async def result_statuses(store: PaymentStore, payment_id: str) -> list[PaymentStatus]:
    async with store.engine.connect() as conn:
        payloads = (await conn.execute(select(outbox.c.payload))).scalars().all()
    events = [MESSAGES.decode_result(p) for p in payloads]
    return [e.status for e in events if e.payment_request_id == payment_id]


async def reopen_count(store: PaymentStore, attempt_key: str) -> int:
    async with store.engine.connect() as conn:
        count = await conn.scalar(
            select(provider_attempts.c.reopen_count).where(
                provider_attempts.c.attempt_key == attempt_key
            )
        )
    return int(count or 0)


async def in_doubt(rig: Rig, command: CreatePayment) -> dict:
    """The payment charged at Stripe, its answer lost: pending, its PaymentIntent."""
    rig.stripe_api.lose_next = 1
    assert await rig.handler.handle(command) is Outcome.PENDING
    (intent,) = rig.stripe_api.intents.values()
    return intent


async def test_older_snapshots_after_the_success_change_nothing(
    rig: Rig, store: PaymentStore, engine
):
    # Guards: NoticeRecorder records only on a payment that is not final (its is_final
    # test and the claim, which only a waiting payment gives), and _already's "own"
    # test (without it, the late amount_capturable_updated reopens the paid key).
    command = card_payment()
    intent = await in_doubt(rig, command)
    payment_id = command.payment_request_id
    assert await post(rig, event("payment_intent.succeeded", intent)) == (200, ACKNOWLEDGED)

    declined = {
        **intent,
        "status": "requires_payment_method",
        "amount_received": 0,
        "last_payment_error": {
            "type": "card_error",
            "code": "card_declined",
            "decline_code": "generic_decline",
            "message": "Your card was declined.",
        },
    }
    late = [
        event("payment_intent.payment_failed", declined),
        event(
            "payment_intent.canceled",
            {**intent, "status": "canceled", "cancellation_reason": "abandoned"},
        ),
        event(
            "payment_intent.amount_capturable_updated",
            {**intent, "status": "requires_capture", "amount_received": 0},
        ),
        event("payment_intent.succeeded", intent),  # and the success, delivered again
    ]
    for body in late:
        assert await post(rig, body) == (200, ACKNOWLEDGED)

    paid = await store.get_payment(payment_id)
    assert paid is not None
    assert paid.status is PaymentStatus.SUCCEEDED
    assert paid.provider_reference == intent["id"]
    assert await result_statuses(store, payment_id) == [
        PaymentStatus.PENDING,
        PaymentStatus.SUCCEEDED,
    ]
    assert await reopen_count(store, f"{payment_id}-a1") == 0
    assert await rig.strays.all() == []


async def test_an_isk_event_is_read_in_stripes_two_decimal_scale(
    rig: Rig, store: PaymentStore, engine
):
    # Guard: money_from_stripe in StripeWebhooks.receive (Stripe's 500 ISK is 5 ISK).
    command = card_payment(Money(5, "ISK"))
    intent = await in_doubt(rig, command)
    assert (intent["amount"], intent["currency"]) == (500, "isk")
    # The same amount read as if ISO's scale were Stripe's: 500 krónur, not the payment's.
    misread = event("payment_intent.succeeded", {**intent, "amount": 5})
    status, answer = await post(rig, misread)
    assert status == 400, answer
    pending = await store.get_payment(command.payment_request_id)
    assert pending is not None
    assert pending.status is PaymentStatus.PENDING

    assert await post(rig, event("payment_intent.succeeded", intent)) == (200, ACKNOWLEDGED)
    paid = await store.get_payment(command.payment_request_id)
    assert paid is not None
    assert (paid.status, paid.amount) == (PaymentStatus.SUCCEEDED, Money(5, "ISK"))
