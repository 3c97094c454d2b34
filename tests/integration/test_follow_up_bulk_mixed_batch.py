"""One writer-queue batch that mixes capture finishes, refund begins, capture and cancel
begins: a refund placed after its payment's capture finish sees the capture.

The group commit runs each kind of bulk operation where its first member stands in the
batch (persistence.group_commit). Here a capture finish comes first, so every capture
finish of the batch runs before the refunds, which reserve against what was captured (the
partial amount, not the authorization); the begins of one payment (a cancel and a
capture) are decided in turn.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select

import persistence.follow_up_store as follow_up_store
import persistence.refund_store as refund_store
from consumer.payment_handler import PaymentCommandHandler
from domain.errors import ErrorCode
from domain.money import Money
from persistence.cancel_store import CancelStore
from persistence.capture_store import CaptureStarted, CaptureStore
from persistence.follow_up import FollowUpRefused, FollowUpStarted
from persistence.follow_up_bulk import begin_many, finish_many
from persistence.refund_begin import RefundRefused, RefundStarted
from persistence.refund_begin import begin_many as refund_begin_many
from persistence.refund_store import RefundStore
from persistence.tables import payments
from providers.registry import Providers
from providers.routing import Router
from telemetry.metrics import Metrics
from tests.integration.test_capture_bulk import _authorized, _cancel, _capture, _event, _refusal
from tests.integration.test_captures import EVENTS
from tests.integration.test_refund_store import _event as _refund_event
from tests.integration.test_refund_store import refund_of

pytestmark = pytest.mark.integration


async def test_refunds_after_capture_finishes_in_one_batch_see_the_captures(
    engine, store, provider, clock, monkeypatch
):
    authorizer = PaymentCommandHandler(
        store=store,
        providers=Providers.of(provider),
        router=Router.catch_all(provider.name),
        events=EVENTS,
        account_key=b"k",
        metrics=Metrics(),
    )
    captures = CaptureStore(engine, store.writes, clock)
    cancels = CancelStore(engine, store.writes, clock)
    refunds = RefundStore(engine, store.writes, clock)
    runs: list[tuple[str, int]] = []

    def counted(name: str, run: Any) -> Any:
        async def run_many(conn: Any, items: Any) -> Any:
            runs.append((name, len(items)))
            return await run(conn, items)

        return run_many

    monkeypatch.setattr(follow_up_store, "begin_many", counted("begin", begin_many))
    monkeypatch.setattr(follow_up_store, "finish_many", counted("finish", finish_many))
    monkeypatch.setattr(refund_store, "begin_many", counted("refund", refund_begin_many))

    # 10.50 authorized each: ``part`` is captured 4.00 of it, ``whole`` all of it, and a
    # third capture's finish stands last in the batch, after a refund of its payment.
    part, whole, last, fresh, voided = [await _authorized(authorizer) for _ in range(5)]
    begun = [
        await captures.begin(_capture(part, "4.00"), _refusal),
        await captures.begin(_capture(whole), _refusal),
        await captures.begin(_capture(last), _refusal),
    ]
    assert all(isinstance(b, CaptureStarted) for b in begun)

    def finish(started: Any) -> Any:
        return captures.finish(
            started.payment.payment_request_id,
            claim=started.claim.token,
            captured=True,
            error=None,
            event=_event,
        )

    answers = await asyncio.gather(
        finish(begun[0]),
        finish(begun[1]),
        refunds.begin(refund_of(part, Money(300, "EUR")), _refund_event),
        refunds.begin(refund_of(part, Money(200, "EUR")), _refund_event),
        refunds.begin(refund_of(whole, Money(1050, "EUR")), _refund_event),
        captures.begin(_capture(fresh), _refusal),
        cancels.begin(_cancel(voided), _refusal),
        captures.begin(_capture(voided), _refusal),
        refunds.begin(refund_of(last, Money(100, "EUR")), _refund_event),
        finish(begun[2]),
    )
    # One batch, each kind in bulk.
    assert sorted(runs) == [("begin", 3), ("finish", 3), ("refund", 4)]
    assert answers[:2] == [True, True]
    assert answers[-1] is True
    # 3.00 of the 4.00 captured, then 2.00 more is refused; the whole 10.50 of the other.
    assert isinstance(answers[2], RefundStarted)
    assert isinstance(answers[3], RefundRefused)
    assert isinstance(answers[4], RefundStarted)
    # The capture finishes ran together where the first of them stands, the last one
    # included: its payment was captured for the refund placed before it.
    assert isinstance(answers[8], RefundStarted)
    assert isinstance(answers[5], FollowUpStarted)
    # A cancel and a capture of one payment: decided in turn, the cancel first.
    assert isinstance(answers[6], FollowUpStarted)
    assert isinstance(answers[7], FollowUpRefused)
    assert answers[7].error.code is ErrorCode.PAYMENT_NOT_CAPTURABLE
    async with engine.connect() as conn:
        rows = {
            row.id: (row.status, row.captured_minor, row.refund_reserved_minor)
            for row in await conn.execute(
                select(
                    payments.c.id,
                    payments.c.status,
                    payments.c.captured_minor,
                    payments.c.refund_reserved_minor,
                )
            )
        }
    assert rows[part.payment_request_id] == ("succeeded", 400, 300)
    assert rows[whole.payment_request_id] == ("succeeded", None, 1050)
    assert rows[last.payment_request_id] == ("succeeded", None, 100)
    assert rows[fresh.payment_request_id][0] == "capturing"
    assert rows[voided.payment_request_id][0] == "canceling"
