"""A refund that cannot be read under its claim leaves no claim behind, on SQLite and
PostgreSQL.

The fault: the read of a refund right after its claim was taken fails (a stored value its
reader refuses, a bug; injected here into the store's one-row read). Before, the claim was
taken in one transaction and the refund read in a second: the failed read left the claim
committed, and every other worker (the next reconciler pass, a redelivery of its command)
was turned away as ``owned_elsewhere`` until the lease ran out. Now the refund is read in
the claim's own transaction (persistence.refund_store.RefundStore.claim): the failure rolls
the claim back with it, so there is nothing to release, and no release that could reach a
claim another worker took since.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

import persistence.refund_store as refund_store_module
from consumer.outcome import Outcome
from consumer.refund_events import RefundEvents
from consumer.refund_handler import RefundCommandHandler
from consumer.refund_reconciler import RefundReconciler
from domain.refunds import RefundPayment, RefundStatus
from domain.retry import RetryPolicy
from persistence.refund_rows import refund_row_in
from persistence.refund_store import RefundStore
from providers.registry import Providers
from schemas.payments import PaymentMessages
from tests.support.builders import create_payment, unique
from tests.support.faulty_acquirer import Bench

pytestmark = pytest.mark.integration

EVENTS = RefundEvents(PaymentMessages.bundled(), "payments.results")


def _unreadable(monkeypatch: pytest.MonkeyPatch, broken: set[str]) -> None:
    """The store's one-row refund read (persistence.refund_rows.refund_row_in, as the
    refund store calls it) fails for the refunds in ``broken``."""

    async def failing_read(conn: Any, refund_id: str) -> Any:
        if refund_id in broken:
            raise ValueError(f"refund {refund_id}: a stored value its reader refuses")
        return await refund_row_in(conn, refund_id)

    monkeypatch.setattr(refund_store_module, "refund_row_in", failing_read)


async def _pending_refund(bench: Bench) -> tuple[RefundStore, RefundCommandHandler, RefundPayment]:
    refunds = RefundStore(bench.engine, bench.store.writes, bench.clock)
    handler = RefundCommandHandler(
        store=refunds,
        providers=Providers.of(bench.acquirer),
        events=EVENTS,
        metrics=bench.metrics,
        retry_policy=RetryPolicy(max_attempts=1),
        clock=bench.clock,
    )
    payment = create_payment()
    assert await bench.payments.handle(payment) is Outcome.SUCCEEDED
    command = RefundPayment.create(
        idempotency_key=unique("refund"),
        payment_request_id=payment.payment_request_id,
        order_id=payment.order_id,
        amount=None,
        reason="requested_by_customer",
        requested_at=bench.clock.now,
    )
    bench.acquirer.timeout_once.add(command.refund_id)
    assert await handler.handle(command) is Outcome.PENDING
    return refunds, handler, command


async def test_a_reconciler_pass_that_cannot_read_the_claimed_refund_keeps_no_claim(
    engine, monkeypatch
):
    bench = Bench(engine)
    refunds, handler, command = await _pending_refund(bench)
    reconciler = RefundReconciler(
        store=refunds,
        handler=handler,
        metrics=bench.metrics,
        min_age=timedelta(0),
        clock=bench.clock,
    )
    broken = {command.refund_id}
    _unreadable(monkeypatch, broken)
    bench.clock.now += timedelta(seconds=1)

    assert await reconciler.run_once() == 1
    assert bench.metrics.refunds_reconciled.labels("failed")._value.get() == 1

    # Read again, on the same clock (the lease of a claim left behind has not run out):
    # the next pass takes the refund and settles it, not turned away by a held claim.
    broken.clear()
    assert await reconciler.run_once() == 1
    assert bench.metrics.refunds_reconciled.labels("owned_elsewhere")._value.get() == 0
    settled = await refunds.get(command.refund_id)
    assert settled is not None
    assert settled.status is RefundStatus.SUCCEEDED


async def test_a_redelivery_that_cannot_read_the_claimed_refund_keeps_no_claim(engine, monkeypatch):
    bench = Bench(engine)
    refunds, handler, command = await _pending_refund(bench)
    broken = {command.refund_id}
    _unreadable(monkeypatch, broken)

    with pytest.raises(ValueError, match="reader refuses"):
        await handler.handle(command)  # the redelivery takes the claim, then reads

    broken.clear()
    claimed = await refunds.claim(command.refund_id)
    assert claimed is not None, "the failed read left the refund's claim held"
