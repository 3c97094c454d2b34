"""An in-doubt payment that cannot be re-sent is not failed on a lagging search's silence, on
SQLite and PostgreSQL.

The first call of an attempt charges but its answer is lost; the customer deletes the saved
card, so the reconciler cannot re-send the key (the vault refuses it) and asks the provider
instead. The provider's status search (as Stripe's) misses the charge for 90 minutes. Such a
payment is failed as "never received" once ``abandon_after`` (1 h here) has passed -- before
the fix, on the search's silence alone: a failed payment with the customer's money taken
(its order's protection lifted, so a new attempt charges again). Now the provider's declared
lag is added to ``abandon_after``: the payment stays pending until the search shows the
charge, and is then recorded as charged.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import pytest

from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.payment_reconciler import PaymentReconciler
from domain.accounts import Account
from domain.payments import CreatePayment
from domain.retry import RetryPolicy
from domain.status import PaymentStatus
from domain.vaulted import VaultedAccount
from persistence.payment_store import PaymentStore
from providers.errors import ProviderTimeoutError
from providers.port import ChargeOutcome, ChargeRequest
from providers.registry import Providers
from providers.routing import Router
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import create_payment
from tests.support.clock import Clock
from tests.support.faulty_acquirer import Acquirer
from tests.support.vault_keys import FINGERPRINT_KEY, KEK_1
from vault.kek import LocalKeyEncryptionKeys
from vault.rows import VaultRows
from vault.vault import Vault

pytestmark = pytest.mark.integration

CLIENT = "acme"
ABANDON_AFTER = timedelta(hours=1)
LAG = timedelta(hours=2)  # what the provider declares
HIDDEN = timedelta(minutes=90)  # how long its search really misses the charge
PASS_EVERY = timedelta(minutes=10)


class LostAnswerLaggingSearch(Acquirer):
    """Charges on the first call but loses its answer; its status search shows a charge
    only ``HIDDEN`` after it was made."""

    status_search_lag = LAG

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self._clock = clock
        self.charged_at: dict[str, datetime] = {}

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        first = request.attempt_key not in self.charges
        outcome = self.book(request.attempt_key)
        if first:
            self.charged_at[request.attempt_key] = self._clock()
            raise ProviderTimeoutError(self.name, "charged, but no answer in time")
        return outcome

    async def charge_status(self, attempt_key: str) -> ChargeOutcome | None:
        made = self.charged_at.get(attempt_key)
        if made is not None and self._clock() < made + HIDDEN:
            return None
        return await super().charge_status(attempt_key)


async def vaulted_command(vault: Vault) -> CreatePayment:
    clear = dataclasses.replace(create_payment(), client_id=CLIENT)
    assert isinstance(clear.payer, Account)
    assert isinstance(clear.payee, Account)
    payer = await vault.tokenize(clear.payer, client_id=CLIENT, saved=True)
    payee = await vault.tokenize(clear.payee, client_id=CLIENT, saved=True)
    return dataclasses.replace(clear, payer=payer, payee=payee)


async def test_a_payment_whose_charge_the_search_misses_is_not_failed_but_found(engine):
    clock = Clock()
    store = PaymentStore(engine, clock)
    vault = Vault(
        VaultRows(engine, store.writes),
        LocalKeyEncryptionKeys.from_text(KEK_1),
        FINGERPRINT_KEY,
        clock=clock,
    )
    acquirer = LostAnswerLaggingSearch(clock)
    handler = PaymentCommandHandler(
        store=store,
        providers=Providers.of(acquirer),
        router=Router({"*": [acquirer.name]}),
        events=PaymentEvents(PaymentMessages.bundled(), "payments.results"),
        account_key=FINGERPRINT_KEY,
        metrics=Metrics(),
        retry_policy=RetryPolicy(max_attempts=1),
        abandon_after=ABANDON_AFTER,
        clock=clock,
        vault=vault,
    )
    reconciler = PaymentReconciler(
        store=store, handler=handler, metrics=Metrics(), min_age=timedelta(0), clock=clock
    )
    command = await vaulted_command(vault)
    pid = command.payment_request_id
    await handler.handle(command)
    assert f"{pid}-a1" in acquirer.charges  # charged, the answer lost
    assert isinstance(command.payer, VaultedAccount)
    assert await vault.delete(command.payer.token, client_id=CLIENT)

    seen = []
    while clock.now < acquirer.charged_at[f"{pid}-a1"] + LAG + ABANDON_AFTER:
        clock.now += PASS_EVERY
        await reconciler.run_once()
        payment = await store.get_payment(pid)
        assert payment is not None
        seen.append(payment.status)

    assert PaymentStatus.FAILED not in seen, "failed on a lagging search's silence"
    assert seen[-1] is PaymentStatus.SUCCEEDED
    settled = await store.get_payment(pid)
    assert settled is not None
    assert settled.provider_reference == f"ch_{pid}-a1"
