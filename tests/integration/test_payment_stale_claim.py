"""A redelivered payment is resolved as it is under its claim, not as its begin read it.

Found by the audit that followed the captures' fix (tests/integration/
test_follow_up_stale_claim.py): a redelivered CreatePayment read its payment in ``begin``
and took the claim in a transaction of its own. In between, another worker learnt that the
provider waits for the payer and recorded ``requires_action`` with the action the payer is
shown. Resolved from the older view (no action known), the provider's status answer, which
like Alipay's query does not repeat the action, read as "waiting, action unknown", and the
charge was sent again to learn it: a second call that makes another action for a payer who
already has one. The claim now hands back the payment read under its lock; the schedule is
made deterministic by running the other worker's copy at the moment the claim is asked for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

import pytest

from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from domain.money import Money
from domain.status import PaymentStatus
from persistence.payment_claims import ClaimedAttempt
from persistence.payment_store import PaymentStore
from providers.errors import ProviderTimeoutError
from providers.port import ChargeOutcome, ChargeStatus
from providers.registry import Providers
from providers.routing import Router
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import ACCOUNT_KEY, create_payment
from tests.support.scripted_provider import ScriptedProvider, requires_action

pytestmark = pytest.mark.integration

SHOWN = "https://acs.example/3ds/shown-to-the-payer"


class MeanwhileAtClaim(PaymentStore):
    """The real store; the first claim asked for first lets ``meanwhile`` run (another
    worker's copy of the command), then takes the claim."""

    meanwhile: Callable[[], Awaitable[None]] | None = None

    async def claim(self, payment_id: str) -> ClaimedAttempt | None:
        meanwhile, self.meanwhile = self.meanwhile, None
        if meanwhile is not None:
            await meanwhile()
        return await super().claim(payment_id)


def _handler(store: PaymentStore, provider: ScriptedProvider) -> PaymentCommandHandler:
    return PaymentCommandHandler(
        store=store,
        providers=Providers.of(provider),
        router=Router.catch_all(provider.name),
        events=PaymentEvents(PaymentMessages.bundled(), "payments.results"),
        account_key=ACCOUNT_KEY,
        metrics=Metrics(),
    )


async def test_a_redelivery_resolves_the_payer_action_recorded_before_its_claim(engine):
    provider = ScriptedProvider()
    provider.script("charge", ProviderTimeoutError(provider.name, "no answer in time"))
    provider.script(
        "charge_status",
        requires_action(url=SHOWN),  # the other worker learns of the action
        ChargeOutcome(ChargeStatus.REQUIRES_ACTION, "ch_1"),  # a query that omits it
    )
    # What a second charge call would answer: another action. Not expected.
    provider.script("charge", requires_action(url="https://acs.example/3ds/another"))
    command = create_payment(amount=Money(3_000, "EUR"))
    other = _handler(PaymentStore(engine), provider)
    assert await other.handle(command) is Outcome.PENDING

    store = MeanwhileAtClaim(engine)

    async def meanwhile() -> None:
        assert await other.handle(command) is Outcome.REQUIRES_ACTION

    store.meanwhile = meanwhile

    outcome = await _handler(store, provider).handle(dataclasses.replace(command))

    assert len(provider.called("charge")) == 1  # never sent again
    assert outcome is Outcome.REPLAYED
    payment = await store.get_payment(command.payment_request_id)
    assert payment is not None
    assert payment.status is PaymentStatus.REQUIRES_ACTION
    assert payment.next_action is not None
    assert payment.next_action.url == SHOWN
