"""Authorized payments for the interleaving tests of captures and voids to race over.

Made through the real payment handler and store, against a provider that authorizes at
once, so each schedule starts from a payment as production leaves it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from dataclasses import dataclass

from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from domain.money import Money
from persistence.payment_store import PaymentStore
from providers.charge_only import ChargeOnlyProvider
from providers.port import ChargeOutcome, ChargeRequest, ChargeStatus
from providers.registry import Providers
from providers.routing import Router
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import create_payment

EVENTS = PaymentEvents(PaymentMessages.bundled(), "payments.results")


class Authorizer(ChargeOnlyProvider):
    """Authorizes at once: makes the payments the schedules race over."""

    def __init__(self) -> None:
        super().__init__()
        self.charges: dict[str, str] = {}  # payment id -> charge reference

    @property
    def name(self) -> str:
        return "sandbox"

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        assert not request.capture, "the payments are authorized only"
        reference = f"ch_{uuid.uuid4().hex[:12]}"
        self.charges[request.payment_request_id] = reference
        self.outcomes[request.attempt_key] = ChargeOutcome(ChargeStatus.AUTHORIZED, reference)
        return self.outcomes[request.attempt_key]


@dataclass(frozen=True, slots=True)
class Authorized:
    payment_id: str
    order_id: str
    charge_reference: str


async def authorized(engine, count: int, amount: Money) -> list[Authorized]:
    """``count`` authorized payments of ``amount``, made through the payment handler, one
    for each schedule (made together: the store's group commit writes them in a few
    commits)."""
    authorizer = Authorizer()
    handler = PaymentCommandHandler(
        store=PaymentStore(engine),
        providers=Providers.of(authorizer),
        router=Router.catch_all(authorizer.name),
        events=EVENTS,
        account_key=b"test-fingerprint-key",
        metrics=Metrics(),
    )
    commands = [
        dataclasses.replace(create_payment(amount=amount), capture=False) for _ in range(count)
    ]
    outcomes = await asyncio.gather(*(handler.handle(c) for c in commands))
    assert set(outcomes) == {Outcome.AUTHORIZED}
    return [
        Authorized(c.payment_request_id, c.order_id, authorizer.charges[c.payment_request_id])
        for c in commands
    ]
