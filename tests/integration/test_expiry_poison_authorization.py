"""One authorization whose provider answer cannot be read does not stop the search for
released holds, on SQLite and PostgreSQL.

The attack: the provider's answer about one authorized payment's charge cannot be read (an
adapter bug on a malformed answer: an exception that is not a ProviderError). Before, the
exception left :meth:`AuthorizationExpiry.run_once` before that payment was marked
examined, so it stayed first in the least-recently-examined order and ended every pass
there: no other released hold was ever found, and those payments stayed ``authorized`` --
their orders blocked -- although the provider had let the money go.

What must hold: the payment that fails is logged and marked examined (to the back of the
queue), and the pass goes on with the others.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from consumer.authorization_expiry import AuthorizationExpiry
from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from domain.status import PaymentStatus
from persistence.expiry_store import ExpiryStore
from persistence.payment_store import PaymentStore
from providers.port import ChargeOutcome, ChargeStatus
from providers.registry import Providers
from schemas.payments import PaymentMessages
from tests.support.builders import create_payment
from tests.support.clock import Clock
from tests.support.faulty_acquirer import Acquirer, one_call_handler

pytestmark = pytest.mark.integration

EVENTS = PaymentEvents(PaymentMessages.bundled(), "payments.results")


class HoldingAcquirer(Acquirer):
    """Authorizes (capture=False); ``unreadable`` references answer with an exception."""

    def __init__(self) -> None:
        super().__init__()
        self.unreadable_references: set[str] = set()

    async def charge_by_reference(self, provider_reference: str) -> ChargeOutcome | None:
        if provider_reference in self.unreadable_references:
            raise RuntimeError("the provider's answer about this charge cannot be read")
        return await super().charge_by_reference(provider_reference)


async def test_one_unreadable_authorization_does_not_hide_the_released_ones(engine):
    clock = Clock()
    store = PaymentStore(engine, clock)
    acquirer = HoldingAcquirer()
    handler = one_call_handler(store, acquirer, clock)
    unreadable = dataclasses.replace(create_payment(), capture=False)
    released = dataclasses.replace(create_payment(), capture=False)
    for command in (unreadable, released):
        key = f"{command.payment_request_id}-a1"
        acquirer.charges[key] = ChargeOutcome(ChargeStatus.AUTHORIZED, f"ch_{key}")
        assert await handler.handle(command) is Outcome.AUTHORIZED
        clock.now += timedelta(seconds=1)
    acquirer.unreadable_references.add(f"ch_{unreadable.payment_request_id}-a1")
    # The provider lets the second hold go (it ran out).
    key = f"{released.payment_request_id}-a1"
    acquirer.charges[key] = ChargeOutcome(ChargeStatus.EXPIRED, f"ch_{key}")

    expiry = AuthorizationExpiry(
        store=ExpiryStore(engine, store.writes, clock),
        providers=Providers.of(acquirer),
        events=EVENTS,
        min_age=timedelta(0),
        clock=clock,
    )
    clock.now += timedelta(seconds=1)
    assert await expiry.run_once() == 1

    found = await store.get_payment(released.payment_request_id)
    assert found is not None
    assert found.status is PaymentStatus.EXPIRED
    left = await store.get_payment(unreadable.payment_request_id)
    assert left is not None
    assert left.status is PaymentStatus.AUTHORIZED
