"""A provider's error text the store cannot take as it is sent is recorded made storable,
never refused: the official Stripe SDK against the stateful stand-in
(tests.support.stripe_lagging_search), the handler, the reconciler and the store on SQLite and
PostgreSQL.

Stripe passes its ``decline_code`` (or, without one, its error ``code``) and its message
through as it sends them, and paygate records them with the decline. Before:

* a code longer than the ``decline_code`` column (64 characters; Stripe documents
  ``payment_method_microdeposit_verification_descriptor_code_mismatch``, 65, and adds new
  ones) was refused by PostgreSQL (SQLSTATE 22001; SQLite stores any length);
* a message holding U+0000 was refused by PostgreSQL, and one holding an unpaired surrogate
  (a JSON ``\\ud83d`` escape, half an emoji cut by a truncation) could not be encoded for
  either database.

Either way the decline could not be recorded: the command was dead-lettered with its payment
left ``processing``, and every reconciler pass read the same decline from Stripe and failed
the same write, so the payment never ended and its order refused every other payment
(``order_already_paid``). The domain now makes an error's text storable
(domain.errors.storable_text, bounded_text), the same in the store, the result event and REST.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.outcome import Outcome
from consumer.payment_reconciler import PaymentReconciler
from domain.accounts import Account, AccountType
from domain.errors import MAX_DECLINE_CODE_LENGTH, ErrorCode
from domain.events import PaymentResult
from domain.payments import CreatePayment
from domain.status import PaymentStatus
from persistence.payment_store import PaymentStore
from persistence.tables import outbox
from providers.stripe import StripeProvider
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import create_payment
from tests.support.clock import Clock
from tests.support.stray_setup import handler_giving_up_after_two_calls
from tests.support.stripe_lagging_search import LaggingStripe

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()
# A decline code of Stripe's documented shape, longer than the column.
LONG_CODE = "payment_method_microdeposit_verification_descriptor_code_mismatch_and_more"


def card_payment() -> CreatePayment:
    return dataclasses.replace(create_payment(), payer=Account(AccountType.TOKEN, "pm_card_visa"))


async def payment_events(engine: AsyncEngine, payment_id: str) -> list[PaymentResult]:
    async with engine.connect() as conn:
        payloads = (await conn.execute(select(outbox.c.payload).order_by(outbox.c.id))).scalars()
        decoded = [MESSAGES.decode_any_result(p) for p in payloads]
    return [
        e for e in decoded if isinstance(e, PaymentResult) and e.payment_request_id == payment_id
    ]


async def test_a_decline_code_longer_than_its_column_fails_the_payment_with_it_cut(
    store: PaymentStore, engine: AsyncEngine, clock: Clock
) -> None:
    assert len(LONG_CODE) > MAX_DECLINE_CODE_LENGTH
    stripe_api = LaggingStripe(clock, hidden_for=timedelta(0))
    stripe_api.declines_with = LONG_CODE
    async with StripeProvider("sk_test_long_codes", http_client=stripe_api) as stripe:
        handler = handler_giving_up_after_two_calls(store, stripe, clock)
        command = card_payment()
        assert await handler.handle(command) is Outcome.FAILED

        payment = await store.get_payment(command.payment_request_id)
        assert payment is not None
        assert payment.status is PaymentStatus.FAILED
        assert payment.error is not None
        assert payment.error.code is ErrorCode.PAYMENT_DECLINED
        assert payment.error.decline_code == LONG_CODE[:MAX_DECLINE_CODE_LENGTH]
        (event,) = await payment_events(engine, command.payment_request_id)
        assert event.status is PaymentStatus.FAILED
        assert event.error is not None
        assert event.error.decline_code == LONG_CODE[:MAX_DECLINE_CODE_LENGTH]

        # The order is free for a new attempt: the payment ended.
        retry = dataclasses.replace(
            card_payment(), idempotency_key="second-attempt", new_attempt=True
        )
        stripe_api.declines_with = None
        assert await handler.handle(retry) is Outcome.SUCCEEDED


@pytest.mark.parametrize(
    ("message", "stored"),
    [
        ("Your card was declined \ud83d", "Your card was declined \ufffd"),
        ("Your card was declined\x00.", "Your card was declined\ufffd."),
    ],
    ids=["unpaired-surrogate", "nul"],
)
async def test_a_decline_message_no_store_can_carry_fails_the_payment_made_storable(
    store: PaymentStore, engine: AsyncEngine, clock: Clock, message: str, stored: str
) -> None:
    stripe_api = LaggingStripe(clock, hidden_for=timedelta(0))
    stripe_api.declines_with = "generic_decline"
    stripe_api.decline_message = message
    async with StripeProvider("sk_test_bad_text", http_client=stripe_api) as stripe:
        handler = handler_giving_up_after_two_calls(store, stripe, clock)
        command = card_payment()
        assert await handler.handle(command) is Outcome.FAILED

        payment = await store.get_payment(command.payment_request_id)
        assert payment is not None
        assert payment.status is PaymentStatus.FAILED
        assert payment.error is not None
        assert (payment.error.message, payment.error.decline_code) == (stored, "generic_decline")
        (event,) = await payment_events(engine, command.payment_request_id)
        assert event.error is not None
        assert event.error.message == stored


class DeclineAnswerLost(LaggingStripe):
    """Stripe declines the card, and its 402 is lost on the way back (a 500 instead), while
    ``lose_declines`` is set: the charge's outcome is unknown to paygate."""

    lose_declines = True

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        body, status, answer_headers = await super().request_async(method, url, headers, post_data)
        if status == 402 and self.lose_declines:
            lost = {"error": {"type": "api_error", "message": "answer lost"}}
            return json.dumps(lost).encode(), 500, answer_headers
        return body, status, answer_headers


async def test_the_reconciler_records_a_long_decline_code_it_reads(
    store: PaymentStore, clock: Clock
) -> None:
    """The charge's answer was lost after Stripe declined it: the reconciler reads the
    PaymentIntent by its key and records the decline, cut, instead of failing the same
    write at every pass."""
    stripe_api = DeclineAnswerLost(clock, hidden_for=timedelta(0))
    stripe_api.declines_with = LONG_CODE
    async with StripeProvider("sk_test_long_codes", http_client=stripe_api) as stripe:
        handler = handler_giving_up_after_two_calls(store, stripe, clock)
        command = card_payment()
        assert await handler.handle(command) is Outcome.PENDING
        stripe_api.lose_declines = False

        clock.now += timedelta(minutes=5)
        reconciler = PaymentReconciler(
            store=store, handler=handler, metrics=Metrics(), min_age=timedelta(0), clock=clock
        )
        report = await reconciler.run_once()
        assert (report.resolved, report.failed) == (1, 0)
        payment = await store.get_payment(command.payment_request_id)
        assert payment is not None
        assert payment.status is PaymentStatus.FAILED
        assert payment.error is not None
        assert payment.error.decline_code == LONG_CODE[:MAX_DECLINE_CODE_LENGTH]
