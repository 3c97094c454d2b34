"""A payment in doubt whose vaulted account is gone before the re-send, on SQLite and
PostgreSQL.

The attack: the first call of an attempt times out while the request is still on its way to
the provider; the client deletes the saved card (or the token is shredded) before the
reconciler re-sends the attempt. The provider has no record of the key yet, so the
reconciler re-sends it, and the vault refuses the token: nothing is sent *this* time. The
first call then lands, and the provider charges.

What must hold: a refusal met before this worker's own re-send proves nothing about the
earlier call of the key, so the payment stays pending (its attempt open, for the provider to
settle), never ``failed``: a failed payment would lift the order's protection, and a new
attempt of the order would charge the customer a second time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select

from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.payment_reconciler import PaymentReconciler
from domain.accounts import Account
from domain.payments import CreatePayment
from domain.retry import RetryPolicy
from domain.status import PaymentStatus
from domain.vaulted import VaultedAccount
from persistence.payment_store import PaymentStore
from persistence.tables import provider_attempts
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

EVENTS = PaymentEvents(PaymentMessages.bundled(), "payments.results")
CLIENT = "acme"


class SlowAcquirer(Acquirer):
    """Charges by attempt key, idempotently. The first charge call "times out": the request
    is still on its way, and reaches the provider only when the test calls :meth:`land`."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []
        self._in_flight: list[Callable[[], object]] = []

    def land(self) -> None:
        landing, self._in_flight = self._in_flight, []
        for effect in landing:
            effect()

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        key = request.attempt_key
        self.sent.append(key)
        if len(self.sent) == 1:
            self._in_flight.append(lambda: self.book(key))
            raise ProviderTimeoutError(self.name, "no answer in time")
        return self.book(key)


async def vaulted_command(vault: Vault) -> CreatePayment:
    """A command as the consumer's intake hands it on: both accounts vaulted."""
    clear = dataclasses.replace(create_payment(), client_id=CLIENT)
    assert isinstance(clear.payer, Account)
    assert isinstance(clear.payee, Account)
    payer = await vault.tokenize(clear.payer, client_id=CLIENT, saved=True)
    payee = await vault.tokenize(clear.payee, client_id=CLIENT, saved=True)
    return dataclasses.replace(clear, payer=payer, payee=payee)


async def test_a_payment_in_doubt_is_not_failed_when_its_account_is_gone_before_the_resend(
    engine,
):
    clock = Clock()
    store = PaymentStore(engine, clock)
    vault = Vault(
        VaultRows(engine, store.writes),
        LocalKeyEncryptionKeys.from_text(KEK_1),
        FINGERPRINT_KEY,
        clock=clock,
    )
    acquirer = SlowAcquirer()
    handler = PaymentCommandHandler(
        store=store,
        providers=Providers.of(acquirer),
        router=Router({"*": [acquirer.name]}),
        events=EVENTS,
        account_key=FINGERPRINT_KEY,
        metrics=Metrics(),
        retry_policy=RetryPolicy(max_attempts=2, base_delay_s=0.001, max_delay_s=0.001),
        clock=clock,
        vault=vault,
    )
    command = await vaulted_command(vault)
    pid = command.payment_request_id
    # The call times out: the payment is pending, its attempt open.
    assert await handler.handle(command) is Outcome.PENDING

    # The customer deletes the saved card while the payment is pending.
    assert isinstance(command.payer, VaultedAccount)
    assert await vault.delete(command.payer.token, client_id=CLIENT)

    # The reconciler: the provider has no record of the key yet, so it re-sends; the vault
    # refuses the token, so nothing is sent this time.
    clock.now += timedelta(seconds=5)
    reconciler = PaymentReconciler(
        store=store, handler=handler, metrics=Metrics(), min_age=timedelta(0), clock=clock
    )
    assert (await reconciler.run_once()).checked == 1
    assert acquirer.sent == [f"{pid}-a1"]

    # The first call lands: the provider charges under the attempt's key.
    acquirer.land()
    assert f"{pid}-a1" in acquirer.charges

    payment = await store.get_payment(pid)
    assert payment is not None
    assert payment.status is PaymentStatus.PENDING
    async with engine.connect() as conn:
        finished_at = (
            await conn.execute(
                select(provider_attempts.c.finished_at).where(
                    provider_attempts.c.attempt_key == f"{pid}-a1"
                )
            )
        ).scalar_one()
    assert finished_at is None  # still in doubt, for the provider's word to settle

    # The order stays protected: a new attempt of it is refused, not charged again.
    again = dataclasses.replace(
        command, idempotency_key=f"{command.idempotency_key}-again", new_attempt=True
    )
    assert await handler.handle(again) is Outcome.REFUSED
    assert len(acquirer.charges) == 1

    # The next pass asks the provider, which now knows the charge: it is recorded.
    clock.now += timedelta(seconds=5)
    await reconciler.run_once()
    settled = await store.get_payment(pid)
    assert settled is not None
    assert settled.status is PaymentStatus.SUCCEEDED
    assert settled.provider_reference == acquirer.charges[f"{pid}-a1"].provider_reference
