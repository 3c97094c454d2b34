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
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.payment_reconciler import PaymentReconciler
from consumer.stray_charges import StraySweep
from domain.retry import RetryPolicy
from domain.status import PaymentStatus
from persistence.payment_store import PaymentStore
from persistence.stray_store import StrayStore
from providers.errors import ProviderError, ProviderTimeoutError, UnsupportedOperationError
from providers.port import (
    CancelRequest,
    CaptureRequest,
    ChargeOutcome,
    ChargeRequest,
    ChargeStatus,
    ProviderRefundStatus,
    RefundOutcome,
    RefundRequest,
)
from providers.registry import Providers
from providers.routing import Router
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import create_payment
from tests.support.clock import Clock

pytestmark = pytest.mark.integration

ACCOUNT_KEY = b"test-fingerprint-key"
EVENTS = PaymentEvents(PaymentMessages.bundled(), "payments.results")


class Acquirer:
    """Charges by attempt key, idempotently, with three faults chosen per key:
    ``timeout_once`` (the first call times out before reaching the provider),
    ``unreadable`` (its status answer raises a non-provider exception) and ``charged_anyway``
    (the call is refused, yet the provider charged: a stray charge)."""

    name = "sandbox"

    def __init__(self) -> None:
        self.charges: dict[str, ChargeOutcome] = {}
        self.refunds: dict[str, RefundOutcome] = {}
        self.timeout_once: set[str] = set()
        self.unreadable: set[str] = set()
        self.charged_anyway: set[str] = set()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        key = request.attempt_key
        if key in self.timeout_once:
            self.timeout_once.discard(key)
            raise ProviderTimeoutError(self.name, "no answer in time")
        outcome = self.charges.setdefault(key, ChargeOutcome(ChargeStatus.SUCCEEDED, f"ch_{key}"))
        if key in self.charged_anyway:
            raise ProviderError(self.name, "refused")
        return outcome

    async def charge_status(self, attempt_key: str) -> ChargeOutcome | None:
        if attempt_key in self.unreadable:
            raise RuntimeError("the provider's answer about this key cannot be read")
        return self.charges.get(attempt_key)

    async def charge_by_reference(self, provider_reference: str) -> ChargeOutcome | None:
        found = [c for c in self.charges.values() if c.provider_reference == provider_reference]
        return found[0] if found else None

    async def close_charge(self, attempt_key: str) -> ChargeOutcome | None:
        raise UnsupportedOperationError(self.name, "not in this test")

    async def capture(self, request: CaptureRequest) -> ChargeOutcome:
        raise UnsupportedOperationError(self.name, "not in this test")

    async def cancel(self, request: CancelRequest) -> ChargeOutcome:
        raise UnsupportedOperationError(self.name, "not in this test")

    async def refund(self, request: RefundRequest) -> RefundOutcome:
        return self.refunds.setdefault(
            request.refund_key,
            RefundOutcome(ProviderRefundStatus.SUCCEEDED, f"re_{request.refund_key}"),
        )

    async def refund_status(self, refund_key: str, charge_reference: str) -> RefundOutcome | None:
        return self.refunds.get(refund_key)


async def test_one_unreadable_in_doubt_payment_stops_neither_the_others_nor_the_stray_sweep(
    engine,
):
    clock = Clock()
    store = PaymentStore(engine, clock)
    acquirer = Acquirer()
    metrics = Metrics()
    handler = PaymentCommandHandler(
        store=store,
        providers=Providers.of(acquirer),
        router=Router({"*": [acquirer.name]}),
        events=EVENTS,
        account_key=ACCOUNT_KEY,
        metrics=metrics,
        retry_policy=RetryPolicy(max_attempts=1),
        clock=clock,
    )
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
