"""One in-doubt payment whose resolution raises does not stop the reconciliation pass, on
SQLite and PostgreSQL.

The attack: the provider's answer about one attempt key cannot be read (an adapter bug on a
malformed answer, say: any exception that is not a ProviderError). Before, the exception
left :meth:`PaymentReconciler.run_once` at that payment, every pass: the payments behind it
in the page waited for a later pass, and the stray-charge sweep, which runs at the end of
the pass, never ran while that payment stayed in doubt. The sweep is the defence behind the
claims: one unreadable answer disabled it for every payment, and a stray charge stayed taken.

What must hold: the payment that fails is counted (``failed``), logged, and left in doubt
with its claim released for a later pass; the others are settled, and the sweep runs.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from consumer.outcome import Outcome
from consumer.payment_reconciler import PaymentReconciler
from consumer.stray_charges import StraySweep
from domain.status import PaymentStatus
from persistence.payment_store import PaymentStore
from persistence.stray_store import StrayStore
from providers.registry import Providers
from telemetry.metrics import Metrics
from tests.support.builders import create_payment
from tests.support.clock import Clock
from tests.support.faulty_acquirer import Acquirer, one_call_handler

pytestmark = pytest.mark.integration


async def test_one_unreadable_in_doubt_payment_stops_neither_the_others_nor_the_stray_sweep(
    engine,
):
    clock = Clock()
    store = PaymentStore(engine, clock)
    acquirer = Acquirer()
    metrics = Metrics()
    handler = one_call_handler(store, acquirer, clock, metrics)
    unreadable, settles, strayed = create_payment(), create_payment(), create_payment()
    acquirer.timeout_once |= {f"{unreadable.payment_request_id}-a1"}
    acquirer.unreadable |= {f"{unreadable.payment_request_id}-a1"}
    acquirer.timeout_once |= {f"{settles.payment_request_id}-a1"}
    acquirer.charged_anyway |= {f"{strayed.payment_request_id}-a1"}
    # The first is handled first, so it heads the reconciler's page.
    assert await handler.handle(unreadable) is Outcome.PENDING
    clock.now += timedelta(seconds=1)
    assert await handler.handle(settles) is Outcome.PENDING
    assert await handler.handle(strayed) is Outcome.FAILED  # yet charged: a stray charge

    clock.now += timedelta(seconds=1)
    reconciler = PaymentReconciler(
        store=store,
        handler=handler,
        metrics=metrics,
        min_age=timedelta(0),
        sweep=StraySweep(
            store=StrayStore(engine, store.writes, clock),
            providers=Providers.of(acquirer),
            metrics=metrics,
            settle_after=timedelta(0),
            clock=clock,
        ),
        clock=clock,
    )
    report = await reconciler.run_once()

    assert (report.checked, report.failed, report.resolved) == (2, 1, 1)
    settled = await store.get_payment(settles.payment_request_id)
    assert settled is not None
    assert settled.status is PaymentStatus.SUCCEEDED
    # The sweep ran: the stray charge is found and refunded.
    assert report.strays is not None
    assert (report.strays.found, report.strays.reversed) == (1, 1)
    assert f"{strayed.payment_request_id}-a1-reversal" in acquirer.refunds
    # The unreadable one stays in doubt, its claim given back for the next pass.
    left = await store.get_payment(unreadable.payment_request_id)
    assert left is not None
    assert left.status is PaymentStatus.PENDING
    assert await store.claim(unreadable.payment_request_id) is not None
