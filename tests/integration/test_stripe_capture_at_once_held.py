"""A charge asked to capture at once whose PaymentIntent waits for a capture is never
recorded ``authorized``, by any reader of it: the official Stripe SDK against a stand-in that
keeps its PaymentIntents (tests.support.stripe_lagging_search), on SQLite and PostgreSQL.

The charge call already read it as an unknown outcome (pending). Before, the reconciler's
status query, the operator's settlement and the ``payment_intent.amount_capturable_updated``
event read the same PaymentIntent as an authorization and recorded the payment
``authorized``: a hold nobody would capture (the client asked for a charge), the customer's
money held, the merchant unpaid, and the expiry sweep recording it ``expired`` days later.
Now every one of them reads the PaymentIntent's ``capture_method`` too
(providers.stripe.transformers.held_for_a_capture_at_once): the payment stays pending, as the
charge call leaves it.
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
from consumer.payment_reconciler import PaymentReconciler
from consumer.payment_settlement import PaymentSettlement
from consumer.provider_notices import NoticeRecorder
from domain.accounts import Account, AccountType
from domain.errors import ErrorCode, PaygateError
from domain.payments import CreatePayment
from domain.status import PaymentStatus
from persistence.payment_store import PaymentStore
from persistence.provider_refund_store import ProviderRefundStore
from persistence.stray_store import StrayStore
from persistence.tables import outbox
from providers.registry import Providers
from providers.stripe import StripeProvider
from providers.stripe.webhooks import StripeWebhooks
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import create_payment
from tests.support.clock import Clock
from tests.support.facade_world import World, world_app
from tests.support.stray_setup import handler_giving_up_after_two_calls
from tests.support.stripe_events import SECRET, event, headers
from tests.support.stripe_lagging_search import LaggingStripe

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()
EVENTS = PaymentEvents(MESSAGES, "payments.results")
# Past Stripe's idempotency window (24 hours): the payment is withheld, the operator's.
PAST_THE_WINDOW = timedelta(hours=25)


@dataclass
class Rig:
    stripe_api: LaggingStripe
    handler: PaymentCommandHandler
    reconciler: PaymentReconciler
    settlement: PaymentSettlement
    notifications_url: str


@pytest.fixture
async def rig(store: PaymentStore, clock: Clock) -> AsyncIterator[Rig]:
    stripe_api = LaggingStripe(clock, hidden_for=timedelta(0))
    stripe_api.holds_captures_at_once = True
    stripe = StripeProvider("sk_test_held", http_client=stripe_api)
    await stripe.start()
    strays = StrayStore(store.engine, store.writes, clock)
    handler = handler_giving_up_after_two_calls(store, stripe, clock)
    facade = TestServer(
        world_app(
            World(),
            notice_readers={"stripe": StripeWebhooks(secret=SecretStr(SECRET), livemode=False)},
            notice_sink=NoticeRecorder(
                store=store,
                events=EVENTS,
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
            handler,
            PaymentReconciler(
                store=store, handler=handler, metrics=Metrics(), min_age=timedelta(0), clock=clock
            ),
            PaymentSettlement(
                store=store,
                providers=Providers.of(stripe),
                events=EVENTS,
                strays=strays,
                clock=clock,
            ),
            str(facade.make_url("/v1/notifications/stripe")),
        )
    finally:
        await stripe.stop()
        await facade.close()


def card_payment() -> CreatePayment:
    # capture=True: the client asks to capture at once.
    command = dataclasses.replace(
        create_payment(), payer=Account(AccountType.TOKEN, "pm_card_visa")
    )
    assert command.capture
    return command


async def result_statuses(store: PaymentStore, payment_id: str) -> list[PaymentStatus]:
    async with store.engine.connect() as conn:
        payloads = (await conn.execute(select(outbox.c.payload))).scalars().all()
    events = [MESSAGES.decode_result(p) for p in payloads]
    return [e.status for e in events if e.payment_request_id == payment_id]


async def held_payment(rig: Rig) -> tuple[CreatePayment, dict]:
    """A capture-at-once payment whose PaymentIntent Stripe holds in ``requires_capture``:
    pending after its charge call, as the charge call has always left it."""
    command = card_payment()
    assert await rig.handler.handle(command) is Outcome.PENDING
    (intent,) = rig.stripe_api.intents.values()
    assert (intent["status"], intent["capture_method"]) == ("requires_capture", "automatic_async")
    return command, intent


async def status_of(store: PaymentStore, payment_id: str) -> PaymentStatus:
    payment = await store.get_payment(payment_id)
    assert payment is not None
    return payment.status


async def test_the_reconciler_leaves_it_pending(rig: Rig, store: PaymentStore, clock: Clock):
    command, _ = await held_payment(rig)
    pid = command.payment_request_id

    clock.now += timedelta(minutes=1)
    report = await rig.reconciler.run_once()

    assert (report.checked, report.still_pending, report.resolved) == (1, 1, 0)
    assert await status_of(store, pid) is PaymentStatus.PENDING
    assert PaymentStatus.AUTHORIZED not in await result_statuses(store, pid)


async def test_the_operator_settlement_records_no_authorization(
    rig: Rig, store: PaymentStore, clock: Clock
):
    command, _ = await held_payment(rig)
    pid = command.payment_request_id

    clock.now += PAST_THE_WINDOW
    with pytest.raises(PaygateError) as refused:
        await rig.settlement.settle(pid)

    assert refused.value.code is ErrorCode.PROVIDER_TIMEOUT
    assert "waits for a capture" in refused.value.message
    assert await status_of(store, pid) is PaymentStatus.PENDING
    assert PaymentStatus.AUTHORIZED not in await result_statuses(store, pid)


async def test_the_amount_capturable_updated_event_records_nothing(rig: Rig, store: PaymentStore):
    command, intent = await held_payment(rig)
    pid = command.payment_request_id

    body = event("payment_intent.amount_capturable_updated", intent)
    async with (
        ClientSession() as session,
        session.post(rig.notifications_url, data=body, headers=headers(body)) as resp,
    ):
        assert resp.status == 200

    assert await status_of(store, pid) is PaymentStatus.PENDING
    assert PaymentStatus.AUTHORIZED not in await result_statuses(store, pid)
