"""Capture and cancel begins and finishes of concurrent callers, run in bulk, on SQLite and
PostgreSQL (persistence.follow_up_bulk).

Every test starts its operations together (``asyncio.gather``), so they land in one
group-commit batch (one transaction, counted) and take the bulk path; each checks that the
answers, the payments and the events are what the same operations give one at a time, and
above all the money rules: a capture never exceeds the authorization, a payment is captured
or released once, and only the claim's holder records an outcome.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import event, select

from consumer.payment_handler import PaymentCommandHandler
from domain.cancels import CancelPayment
from domain.captures import CapturePayment
from domain.errors import ErrorCode, PaygateError
from domain.money import Money
from domain.payment_view import PaymentView
from persistence.cancel_store import CancelStore
from persistence.capture_store import (
    CaptureExisting,
    CaptureRefused,
    CaptureStarted,
    CaptureStore,
)
from persistence.group_commit import GroupCommit
from persistence.outbox import OutboxMessage
from persistence.tables import outbox, payments
from providers.registry import Providers
from providers.routing import Router
from telemetry.metrics import Metrics
from tests.integration.test_bulk_writes import _counting
from tests.integration.test_captures import EVENTS, NOW
from tests.support.builders import create_payment

pytestmark = pytest.mark.integration


@pytest.fixture
def authorizer(store, provider):
    return PaymentCommandHandler(
        store=store,
        providers=Providers.of(provider),
        router=Router.catch_all(provider.name),
        events=EVENTS,
        account_key=b"k",
        metrics=Metrics(),
    )


@pytest.fixture
def captures(engine, store, clock):
    return CaptureStore(engine, store.writes, clock)


@pytest.fixture
def cancels(engine, store, clock):
    return CancelStore(engine, store.writes, clock)


def _message(payment: PaymentView, label: str) -> OutboxMessage:
    return OutboxMessage(
        event_id=str(uuid.uuid4()),
        topic="payments.results",
        key=payment.payment_request_id,
        payload=f"{label}:{payment.status.value}".encode(),
    )


def _refusal(payment: PaymentView, error: PaygateError) -> OutboxMessage:
    return _message(payment, f"refused-{error.code.value}")


def _event(payment: PaymentView) -> OutboxMessage:
    return _message(payment, "done")


async def _authorized(authorizer, amount: Money | None = None):
    command = dataclasses.replace(create_payment(amount=amount), capture=False)
    await authorizer.handle(command)
    return command


def _capture(payment, amount: str | None = None) -> CapturePayment:
    return CapturePayment.create(
        payment_request_id=payment.payment_request_id,
        order_id=payment.order_id,
        requested_at=NOW,
        amount=None if amount is None else Decimal(amount),
    )


def _cancel(payment) -> CancelPayment:
    return CancelPayment.create(
        payment_request_id=payment.payment_request_id, order_id=payment.order_id, requested_at=NOW
    )


async def _row(engine, payment_id: str):
    async with engine.connect() as conn:
        return (await conn.execute(select(payments).where(payments.c.id == payment_id))).one()


async def _events(engine, payment_id: str) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(outbox.c.payload).where(outbox.c.message_key == payment_id).order_by(outbox.c.id)
        )
        return [row.payload.decode() for row in rows]


async def _finish(captures, begun: CaptureStarted, claim: str | None = None) -> bool:
    return await captures.finish(
        begun.payment.payment_request_id,
        claim=claim or begun.claim.token,
        captured=True,
        error=None,
        event=_event,
    )


def _shape(result) -> tuple[str, ErrorCode | None]:
    code = result.error.code if isinstance(result, CaptureRefused) else None
    return type(result).__name__, code


async def test_a_batch_of_captures_is_a_handful_of_statements_per_step(
    engine, authorizer, captures
):
    authorized = [await _authorized(authorizer) for _ in range(20)]
    counts = _counting(engine)
    begun = await asyncio.gather(*(captures.begin(_capture(p), _refusal) for p in authorized))
    assert all(isinstance(b, CaptureStarted) for b in begun)
    assert counts["transactions"] == 1
    # Lock and read the payments, move them, read them back: not four per capture.
    assert counts["statements"] <= 4
    for payment in authorized:
        row = await _row(engine, payment.payment_request_id)
        assert (row.status, row.claim_token) != ("authorized", None)
        assert row.status == "capturing"

    counts = _counting(engine)
    finished = await asyncio.gather(*(_finish(captures, b) for b in begun))
    assert list(finished) == [True] * 20
    assert counts["transactions"] == 1
    # Lock, move, read back, the events and their webhook query: not four per capture.
    assert counts["statements"] <= 6
    for payment in authorized:
        row = await _row(engine, payment.payment_request_id)
        assert (row.status, row.claim_token, row.captured_minor) == ("succeeded", None, None)
        assert await _events(engine, payment.payment_request_id) == ["done:succeeded"]


@pytest.mark.parametrize(
    ("currency", "authorized_minor", "asked", "captured_minor"),
    [
        pytest.param("JPY", 1050, "700", 700, id="JPY, no minor unit"),
        pytest.param("KWD", 10500, "7.125", 7125, id="KWD, three decimals"),
        pytest.param("EUR", 1050, "8.00", 800, id="EUR"),
    ],
)
async def test_partial_captures_in_a_batch_take_what_was_asked_and_never_more(
    engine, authorizer, captures, currency, authorized_minor, asked, captured_minor
):
    """A partial capture, a whole one, and one asking for more than is held, among others:
    the partial and whole ones start with their amounts, the excessive one is refused
    ``capture_exceeds_authorized`` and changes nothing."""
    money = Money(authorized_minor, currency)
    partial, whole, excessive = [await _authorized(authorizer, money) for _ in range(3)]
    others = [await _authorized(authorizer) for _ in range(3)]
    too_much = str(Money(authorized_minor + 1, currency).to_decimal())
    counts = _counting(engine)
    begun = await asyncio.gather(
        captures.begin(_capture(partial, asked), _refusal),
        captures.begin(_capture(whole), _refusal),
        captures.begin(_capture(excessive, too_much), _refusal),
        *(captures.begin(_capture(p), _refusal) for p in others),
    )
    assert counts["transactions"] == 1
    assert [_shape(b) for b in begun[:3]] == [
        ("FollowUpStarted", None),
        ("FollowUpStarted", None),
        ("FollowUpRefused", ErrorCode.CAPTURE_EXCEEDS_AUTHORIZED),
    ]
    assert begun[0].payment.captured_amount == Money(captured_minor, currency)
    assert begun[1].payment.captured_amount == money
    assert (await _row(engine, partial.payment_request_id)).captured_minor == captured_minor
    assert (await _row(engine, whole.payment_request_id)).captured_minor is None
    row = await _row(engine, excessive.payment_request_id)
    assert (row.status, row.captured_minor, row.claim_token) == ("authorized", None, None)
    assert await _events(engine, excessive.payment_request_id) == [
        "refused-capture_exceeds_authorized:authorized"
    ]

    finished = await asyncio.gather(*(_finish(captures, b) for b in begun if b is not begun[2]))
    assert all(finished)
    row = await _row(engine, partial.payment_request_id)
    assert (row.status, row.captured_minor) == ("succeeded", captured_minor)


async def test_a_capture_its_replay_and_a_conflicting_reuse_in_one_batch(
    engine, authorizer, captures
):
    """Decided one after another in the batch's order: the first starts, its replay finds
    it under way, the one asking another amount is refused ``idempotency_conflict``; the
    amount captured is the first's."""
    payment = await _authorized(authorizer)
    others = [await _authorized(authorizer) for _ in range(3)]
    counts = _counting(engine)
    begun = await asyncio.gather(
        captures.begin(_capture(others[0]), _refusal),
        captures.begin(_capture(payment, "6.00"), _refusal),
        captures.begin(_capture(others[1]), _refusal),
        captures.begin(_capture(payment, "6.00"), _refusal),
        captures.begin(_capture(payment, "7.00"), _refusal),
        captures.begin(_capture(others[2]), _refusal),
    )
    assert counts["transactions"] == 1
    assert [_shape(b) for b in begun] == [
        ("FollowUpStarted", None),
        ("FollowUpStarted", None),
        ("FollowUpStarted", None),
        ("FollowUpExisting", None),
        ("FollowUpRefused", ErrorCode.IDEMPOTENCY_CONFLICT),
        ("FollowUpStarted", None),
    ]
    assert isinstance(begun[3], CaptureExisting)
    row = await _row(engine, payment.payment_request_id)
    assert (row.status, row.captured_minor, row.claim_token) == (
        "capturing",
        600,
        begun[1].claim.token,
    )
    assert await _events(engine, payment.payment_request_id) == [
        "refused-idempotency_conflict:capturing"
    ]
    # Only the claim's holder finishes: a finish under any other token changes nothing.
    finished = await asyncio.gather(
        _finish(captures, begun[1]), _finish(captures, begun[1], claim="not-the-claim")
    )
    assert list(finished) == [True, False]
    row = await _row(engine, payment.payment_request_id)
    assert (row.status, row.captured_minor) == ("succeeded", 600)


@pytest.mark.parametrize("capture_first", [True, False], ids=["capture first", "cancel first"])
async def test_a_capture_and_a_cancel_of_one_payment_in_one_batch(
    engine, authorizer, captures, cancels, capture_first
):
    """Exactly one moves the payment out of ``authorized``: the one first in the batch; the
    other is refused with its event, as it would be one after the other."""
    payment = await _authorized(authorizer)
    others = [await _authorized(authorizer) for _ in range(4)]
    capture = captures.begin(_capture(payment), _refusal)
    cancel = cancels.begin(_cancel(payment), _refusal)
    first, second = (capture, cancel) if capture_first else (cancel, capture)
    counts = _counting(engine)
    begun = await asyncio.gather(
        captures.begin(_capture(others[0]), _refusal),
        cancels.begin(_cancel(others[1]), _refusal),
        first,
        captures.begin(_capture(others[2]), _refusal),
        second,
        cancels.begin(_cancel(others[3]), _refusal),
    )
    assert counts["transactions"] == 1
    winner, loser = begun[2], begun[4]
    assert isinstance(winner, CaptureStarted)
    assert isinstance(loser, CaptureRefused)
    expected_status = "capturing" if capture_first else "canceling"
    refused = (
        ErrorCode.PAYMENT_NOT_CANCELABLE if capture_first else ErrorCode.PAYMENT_NOT_CAPTURABLE
    )
    assert loser.error.code is refused
    row = await _row(engine, payment.payment_request_id)
    assert (row.status, row.claim_token) == (expected_status, winner.claim.token)
    assert await _events(engine, payment.payment_request_id) == [
        f"refused-{refused.value}:{expected_status}"
    ]
    for other, status in zip(
        others, ("capturing", "canceling", "capturing", "canceling"), strict=True
    ):
        assert (await _row(engine, other.payment_request_id)).status == status


async def test_an_exception_inside_the_bulk_update_leaves_nothing_half_written(
    engine, authorizer, captures
):
    """The bulk UPDATE fails once: the batch rolls back, each begin runs alone on the single
    path, every payment is captured once with one event each."""
    authorized = [await _authorized(authorizer) for _ in range(6)]
    failures = {"left": 1}

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _fail_bulk_update(_conn, _cursor, statement, _params, _context, executemany) -> None:
        bulk_update = executemany and statement.lstrip().upper().startswith("UPDATE PAYMENTS")
        if bulk_update and failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("injected: the bulk update failed")

    try:
        begun = await asyncio.gather(*(captures.begin(_capture(p), _refusal) for p in authorized))
        assert failures["left"] == 0, "the bulk update ran"
        assert all(isinstance(b, CaptureStarted) for b in begun)
        for payment, started in zip(authorized, begun, strict=True):
            row = await _row(engine, payment.payment_request_id)
            assert (row.status, row.claim_token) == ("capturing", started.claim.token)

        failures["left"] = 1
        finished = await asyncio.gather(*(_finish(captures, b) for b in begun))
        assert failures["left"] == 0, "the bulk update ran"
        assert list(finished) == [True] * 6
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", _fail_bulk_update)
    for payment in authorized:
        row = await _row(engine, payment.payment_request_id)
        assert (row.status, row.claim_token) == ("succeeded", None)
        assert await _events(engine, payment.payment_request_id) == ["done:succeeded"]


async def test_two_writer_queues_capturing_one_payment_start_it_once(
    engine, authorizer, clock, store
):
    """Two stores, each with its own writer queue on the database, begin captures and
    cancels of one payment among others at once: one start, whatever the interleaving."""
    first = CaptureStore(engine, GroupCommit(engine), clock)
    second = CancelStore(engine, GroupCommit(engine), clock)
    payment = await _authorized(authorizer)
    mine = [await _authorized(authorizer) for _ in range(4)]
    theirs = [await _authorized(authorizer) for _ in range(4)]
    begun = await asyncio.gather(
        *(first.begin(_capture(p), _refusal) for p in mine[:2]),
        first.begin(_capture(payment), _refusal),
        *(first.begin(_capture(p), _refusal) for p in mine[2:]),
        *(second.begin(_cancel(p), _refusal) for p in reversed(theirs[:2])),
        second.begin(_cancel(payment), _refusal),
        *(second.begin(_cancel(p), _refusal) for p in reversed(theirs[2:])),
    )
    on_payment = [begun[2], begun[7]]
    assert sorted(type(b).__name__ for b in on_payment) == ["FollowUpRefused", "FollowUpStarted"]
    (winner,) = [b for b in on_payment if isinstance(b, CaptureStarted)]
    row = await _row(engine, payment.payment_request_id)
    assert (row.status, row.claim_token) == (winner.payment.status.value, winner.claim.token)
    assert len(await _events(engine, payment.payment_request_id)) == 1
    for p in mine:
        assert (await _row(engine, p.payment_request_id)).status == "capturing"
    for p in theirs:
        assert (await _row(engine, p.payment_request_id)).status == "canceling"


async def test_a_batch_of_500_captures_and_their_finishes(engine, authorizer, captures):
    authorized = list(await asyncio.gather(*(_authorized(authorizer) for _ in range(500))))
    counts = _counting(engine)
    begun = await asyncio.gather(
        *(captures.begin(_capture(p, "5.00"), _refusal) for p in authorized)
    )
    assert all(isinstance(b, CaptureStarted) for b in begun)
    assert counts["transactions"] == 1
    counts = _counting(engine)
    finished = await asyncio.gather(*(_finish(captures, b) for b in begun))
    assert all(finished)
    assert counts["transactions"] == 1
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(payments.c.status, payments.c.captured_minor).where(
                    payments.c.id.in_([p.payment_request_id for p in authorized])
                )
            )
        ).all()
        events = (
            await conn.execute(
                select(outbox.c.message_key).where(
                    outbox.c.message_key.in_([p.payment_request_id for p in authorized])
                )
            )
        ).all()
    assert {tuple(row) for row in rows} == {("succeeded", 500)}
    assert len(rows) == 500
    assert len(events) == 500
