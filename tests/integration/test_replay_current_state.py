"""A replay is answered with the payment as it is now, not as it was when the replay began.

Found by the chaos run: a CreatePayment replayed while the expiry pass moved its payment
from ``authorized`` to ``expired`` queued ``authorized`` again, after ``expired``; a reader
keeping the last event per payment saw the payment go back. The schedule here is that
interleaving, made deterministic: the expiry commits between the replay's begin (which
reads ``authorized``) and its re-publish.
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import select

from consumer.outcome import Outcome
from consumer.payment_handler import PaymentCommandHandler
from domain.events import PaymentResult
from domain.money import Money
from domain.payments import CreatePayment
from domain.status import PaymentStatus
from persistence.expiry_store import ExpiryStore
from persistence.payment_begin import BeginResult
from persistence.payment_store import PaymentStore
from persistence.tables import outbox
from providers.registry import Providers
from providers.routing import Router
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.authorized_payments import EVENTS, Authorizer
from tests.support.builders import create_payment

MESSAGES = PaymentMessages.bundled()


class ExpiresWhileReplayed(PaymentStore):
    """The real store, with the authorization's expiry committed by another writer right
    after a begin has read the payment."""

    async def begin(self, command: CreatePayment, **kwargs: object) -> BeginResult:
        begun = await super().begin(command, **kwargs)  # type: ignore[arg-type]
        expired = await ExpiryStore(self.engine, self.writes).release(
            command.payment_request_id,
            status=PaymentStatus.EXPIRED,
            error=None,
            event=EVENTS.of_payment,
        )
        assert expired, "the payment was authorized when the expiry ran"
        return begun


def _handler(store: PaymentStore, provider: Authorizer) -> PaymentCommandHandler:
    return PaymentCommandHandler(
        store=store,
        providers=Providers.of(provider),
        router=Router.catch_all(provider.name),
        events=EVENTS,
        account_key=b"test-fingerprint-key",
        metrics=Metrics(),
    )


async def _statuses(engine, payment_id: str) -> list[PaymentStatus]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(outbox.c.payload).order_by(outbox.c.id))).all()
    events = [MESSAGES.decode_any_result(r.payload) for r in rows]
    return [
        e.status
        for e in events
        if isinstance(e, PaymentResult) and e.payment_request_id == payment_id
    ]


async def test_a_replay_overtaken_by_the_expiry_republishes_expired_not_authorized(engine):
    provider = Authorizer()
    command = dataclasses.replace(create_payment(amount=Money(3_000, "EUR")), capture=False)
    assert await _handler(PaymentStore(engine), provider).handle(command) is Outcome.AUTHORIZED

    replayed = await _handler(ExpiresWhileReplayed(engine), provider).handle(command)

    assert replayed is Outcome.REPLAYED
    statuses = await _statuses(engine, command.payment_request_id)
    assert statuses[-1] is PaymentStatus.EXPIRED, statuses
    assert statuses == [PaymentStatus.AUTHORIZED, PaymentStatus.EXPIRED, PaymentStatus.EXPIRED]
    assert len(provider.charges) == 1  # the replay charged nothing


async def test_a_replay_of_a_payment_nobody_changed_republishes_its_state(engine):
    provider = Authorizer()
    command = dataclasses.replace(create_payment(amount=Money(3_000, "EUR")), capture=False)
    handler = _handler(PaymentStore(engine), provider)
    assert await handler.handle(command) is Outcome.AUTHORIZED

    assert await handler.handle(command) is Outcome.REPLAYED

    statuses = await _statuses(engine, command.payment_request_id)
    assert statuses == [PaymentStatus.AUTHORIZED, PaymentStatus.AUTHORIZED]
