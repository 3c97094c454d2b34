"""An in-doubt payment whose key was re-sent late is not failed on a lagging search's silence
counted from the attempt's beginning, on SQLite and PostgreSQL.

Stripe-like (status search lag 2 h, abandon_after 1 h): the attempt begins at 0 and its
first call times out before it reaches the provider. At 2 h 50 the reconciler finds no
record of the key and re-sends it (the provider honours keys for good here): that call lands
and charges, but its answer is lost. The customer then deletes the saved card, so the next
pass cannot re-send and asks the abandon rule. Before the fix that rule counted from the
attempt's beginning: at 3 h (0 + 1 h + 2 h) the search, which may lag 2 h behind the charge
of 2 h 50, still hid it, and the payment was failed "nothing was charged" with the money
taken (its order's protection lifted, so a new attempt could charge again). Now the re-send
is stamped before it goes out (``provider_attempts.last_sent_at``) and the rule counts from
it: the payment stays pending until the search shows the charge, then is recorded charged.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.payment_reconciler import PaymentReconciler
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
from tests.integration.test_abandon_search_lag import CLIENT, vaulted_command
from tests.support.clock import Clock
from tests.support.faulty_acquirer import Acquirer
from tests.support.vault_keys import FINGERPRINT_KEY, KEK_1
from vault.kek import LocalKeyEncryptionKeys
from vault.rows import VaultRows
from vault.vault import Vault

pytestmark = pytest.mark.integration

ABANDON_AFTER = timedelta(hours=1)
LAG = timedelta(hours=2)  # what the provider declares (Stripe's search)
HIDDEN = timedelta(minutes=90)  # how long its search really misses a charge
RESENT_AT = timedelta(hours=2, minutes=50)
PASS_EVERY = timedelta(minutes=10)


class LateResendLands(Acquirer):
    """The key's first call is lost before it arrives; its second charges, but its answer
    is lost too. The status search shows a charge only ``HIDDEN`` after it was made."""

    status_search_lag = LAG

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self._clock = clock
        self.calls: dict[str, int] = {}
        self.charged_at: dict[str, datetime] = {}

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        key = request.attempt_key
        self.calls[key] = self.calls.get(key, 0) + 1
        if self.calls[key] == 1:
            raise ProviderTimeoutError(self.name, "no answer in time (never arrived)")
        if key not in self.charges:
            self.book(key)
            self.charged_at[key] = self._clock()
            raise ProviderTimeoutError(self.name, "charged, but no answer in time")
        return self.charges[key]

    async def charge_status(self, attempt_key: str) -> ChargeOutcome | None:
        made = self.charged_at.get(attempt_key)
        if made is not None and self._clock() < made + HIDDEN:
            return None
        return await super().charge_status(attempt_key)


async def test_a_late_resend_keeps_the_payment_pending_until_its_charge_shows(engine):
    clock = Clock()
    began = clock.now
    store = PaymentStore(engine, clock)
    vault = Vault(
        VaultRows(engine, store.writes),
        LocalKeyEncryptionKeys.from_text(KEK_1),
        FINGERPRINT_KEY,
        clock=clock,
    )
    acquirer = LateResendLands(clock)
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
    key = f"{pid}-a1"
    await handler.handle(command)
    assert acquirer.calls == {key: 1}
    assert not acquirer.charges

    clock.now = began + RESENT_AT
    await reconciler.run_once()
    assert acquirer.charged_at == {key: began + RESENT_AT}  # the re-send landed, unanswered
    assert isinstance(command.payer, VaultedAccount)
    assert await vault.delete(command.payer.token, client_id=CLIENT)

    seen = []
    while clock.now < began + RESENT_AT + ABANDON_AFTER + LAG:
        clock.now += PASS_EVERY
        await reconciler.run_once()
        payment = await store.get_payment(pid)
        assert payment is not None
        seen.append((clock.now - began, payment.status))

    assert (ABANDON_AFTER + LAG, PaymentStatus.PENDING) in seen  # where it used to fail
    assert all(status is not PaymentStatus.FAILED for _, status in seen), seen
    assert seen[-1][1] is PaymentStatus.SUCCEEDED
    assert acquirer.calls[key] == 2  # never sent again once the card was gone
    settled = await store.get_payment(pid)
    assert settled is not None
    assert settled.provider_reference == f"ch_{key}"
    # The re-send was stamped before it went out; the rule counted from it.
    async with engine.connect() as conn:
        stamped = (
            await conn.execute(
                select(provider_attempts.c.last_sent_at).where(
                    provider_attempts.c.attempt_key == key
                )
            )
        ).scalar_one()
    assert stamped is not None
    assert stamped.replace(tzinfo=None) == (began + RESENT_AT).replace(tzinfo=None)
