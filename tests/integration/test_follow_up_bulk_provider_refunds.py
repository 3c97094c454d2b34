"""Follow-ups settled as the provider holds, refunded outside paygate, finish in bulk with the
others of their batch, and write what the single path writes: on SQLite and PostgreSQL.

A capture or a void that finds the charge captured and then refunded by hand at the
provider records the provider's refunded total (``settle_as_provider_holds``): the
payment's ``refunded_minor`` becomes that total and the rise is added to
``refunded_outside_minor``, computed from the row as it was (persistence.payment_rows.
refunded_at_provider_to). Such a finish used to be kept off the bulk path by a look at its
values (an SQL expression inside them); now it declares the figure (an integer) and the bulk
UPDATE binds it per row in the same expression. Guarded here: a batch of two such finishes
with different totals and a plain capture finish runs as one bulk call in one transaction
(no fallback), and every row, answer and event is what the same finishes give one at a time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Any

import pytest
from sqlalchemy import select

import persistence.follow_up_store as follow_up_store
from consumer.payment_handler import PaymentCommandHandler
from domain.payment_view import PaymentView
from domain.status import PaymentStatus
from persistence.capture_store import CaptureStore
from persistence.follow_up import FollowUpStarted
from persistence.follow_up_bulk import finish_many
from persistence.outbox import OutboxMessage
from persistence.payment_store import PaymentStore
from persistence.tables import payments
from providers.registry import Providers
from providers.routing import Router
from telemetry.metrics import Metrics
from tests.integration.test_bulk_writes import _counting
from tests.integration.test_capture_bulk import _authorized, _capture, _refusal
from tests.integration.test_captures import EVENTS

pytestmark = pytest.mark.integration

AUTHORIZED_MINOR = 1050  # what create_payment authorizes
PART = 300


@pytest.fixture
def captures(engine, store: PaymentStore, clock) -> CaptureStore:
    return CaptureStore(engine, store.writes, clock)


@pytest.fixture
def authorizer(store, provider) -> PaymentCommandHandler:
    return PaymentCommandHandler(
        store=store,
        providers=Providers.of(provider),
        router=Router.catch_all(provider.name),
        events=EVENTS,
        account_key=b"k",
        metrics=Metrics(),
    )


class _Events:
    """Builds each finish's result event and keeps the payment as the event saw it."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[Any, ...]] = {}

    def __call__(self, payment: PaymentView) -> OutboxMessage:
        self.seen[payment.payment_request_id] = _figures(payment)
        return OutboxMessage(str(uuid.uuid4()), "payments.results", payment.order_id, b"")


def _figures(payment: PaymentView) -> tuple[Any, ...]:
    return (payment.status, payment.captured_minor, payment.refunded_minor)


async def _capturing(authorizer, captures: CaptureStore) -> FollowUpStarted:
    begun = await captures.begin(_capture(await _authorized(authorizer)), _refusal)
    assert isinstance(begun, FollowUpStarted)
    return begun


def _finishes(captures: CaptureStore, begun: list[FollowUpStarted], events: _Events) -> list:
    """Refunded in part at the provider, refunded in full there, and captured: three
    finishes of one kind (captures), two of them raising the refunded total."""
    in_part, in_full, captured = begun
    return [
        captures.settle_as_provider_holds(
            in_part.payment.payment_request_id,
            claim=in_part.claim.token,
            status=PaymentStatus.PARTIALLY_REFUNDED,
            captured_minor=None,
            error=None,
            event=events,
            refunded_minor=PART,
        ),
        captures.settle_as_provider_holds(
            in_full.payment.payment_request_id,
            claim=in_full.claim.token,
            status=PaymentStatus.REFUNDED,
            captured_minor=None,
            error=None,
            event=events,
            refunded_minor=AUTHORIZED_MINOR,
        ),
        captures.finish(
            captured.payment.payment_request_id,
            claim=captured.claim.token,
            captured=True,
            error=None,
            event=events,
        ),
    ]


async def _rows(engine, begun: list[FollowUpStarted]) -> list[tuple[Any, ...]]:
    rows = []
    async with engine.connect() as conn:
        for started in begun:
            row = (
                await conn.execute(
                    select(payments).where(payments.c.id == started.payment.payment_request_id)
                )
            ).one()
            rows.append(
                (
                    row.status,
                    row.captured_minor,
                    row.refunded_minor,
                    row.refunded_outside_minor,
                    row.claim_token,
                )
            )
    return rows


async def test_finishes_refunded_at_the_provider_run_in_bulk_as_one_at_a_time(
    engine, authorizer, captures, monkeypatch
):
    runs: list[int] = []

    async def counted(conn: Any, items: Any) -> Any:
        runs.append(len(items))
        return await finish_many(conn, items)

    monkeypatch.setattr(follow_up_store, "finish_many", counted)
    together = [await _capturing(authorizer, captures) for _ in range(3)]
    alone = [await _capturing(authorizer, captures) for _ in range(3)]
    together_events, alone_events = _Events(), _Events()

    counts = _counting(engine)
    answers = await asyncio.gather(*_finishes(captures, together, together_events))
    # One bulk call for the three, in one transaction: no fallback to one at a time.
    assert (runs, counts["transactions"]) == ([3], 1)
    one_at_a_time = [await finish for finish in _finishes(captures, alone, alone_events)]
    assert runs == [3]  # each alone in its batch: its own single path

    assert list(answers) == one_at_a_time == [True, True, True]
    expected = [
        ("partially_refunded", None, PART, PART, None),
        ("refunded", None, AUTHORIZED_MINOR, AUTHORIZED_MINOR, None),
        ("succeeded", None, 0, 0, None),
    ]
    assert await _rows(engine, together) == expected
    assert await _rows(engine, alone) == expected
    # Each event was made from its row as the batch wrote it.
    for bulk, single in zip(together, alone, strict=True):
        made = together_events.seen[bulk.payment.payment_request_id]
        assert made == alone_events.seen[single.payment.payment_request_id]
    assert [together_events.seen[b.payment.payment_request_id] for b in together] == [
        (PaymentStatus.PARTIALLY_REFUNDED, None, PART),
        (PaymentStatus.REFUNDED, None, AUTHORIZED_MINOR),
        (PaymentStatus.SUCCEEDED, None, 0),
    ]


async def test_a_stale_claim_among_them_changes_nothing_of_its_payment(
    engine, authorizer, captures
):
    """A finish refunded at the provider under a claim it no longer holds answers False and
    leaves its payment as it was, while the others of the batch are recorded."""
    begun = [await _capturing(authorizer, captures) for _ in range(3)]
    stale = dataclasses.replace(begun[0], claim=dataclasses.replace(begun[0].claim, token="gone"))

    answers = await asyncio.gather(*_finishes(captures, [stale, *begun[1:]], _Events()))

    assert list(answers) == [False, True, True]
    rows = await _rows(engine, begun)
    assert rows[0][:4] == ("capturing", None, 0, 0)
    assert rows[1][:4] == ("refunded", None, AUTHORIZED_MINOR, AUTHORIZED_MINOR)
