"""Begins and finishes of concurrent callers, run in bulk, on SQLite and PostgreSQL.

Every test starts its operations together (``asyncio.gather``), so they land in one
group-commit batch and take the bulk path; each checks that the answers, the rows and the
outbox are what the same operations would have given one at a time.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

import pytest
from sqlalchemy import event, func, select

from domain.error_info import ErrorInfo
from domain.errors import ErrorCode, PaygateError
from domain.status import InvalidTransitionError, PaymentStatus
from persistence.attempts import ATTEMPT_DECLINED, ATTEMPT_SUCCEEDED, ATTEMPT_UNKNOWN
from persistence.outbox import OutboxMessage
from persistence.payment_begin import Existing, Refused, Started
from persistence.tables import outbox, payments, provider_attempts
from tests.support.builders import ACCOUNT_KEY, create_payment, unexpected_refusal, unique

pytestmark = pytest.mark.integration


def _counting(engine) -> dict[str, int]:
    """Counts the transactions begun and the statements sent from now on."""
    counts = {"transactions": 0, "statements": 0}

    @event.listens_for(engine.sync_engine, "begin")
    def _begun(_conn) -> None:
        counts["transactions"] += 1

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _sent(*_args) -> None:
        counts["statements"] += 1

    return counts


def _event_id(payment_id: str, label: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{payment_id}/{label}"))


def _refusal_event(command, error: PaygateError, created_at: datetime) -> OutboxMessage:
    return OutboxMessage(
        event_id=_event_id(command.payment_request_id, "refused"),
        topic="payments.results",
        key=command.order_id,
        payload=error.code.value.encode(),
    )


async def _begin(store, command, refusal_event=_refusal_event):
    return await store.begin(
        command, provider="sandbox", account_key=ACCOUNT_KEY, refusal_event=refusal_event
    )


def _event(payment_id: str, label: str) -> OutboxMessage:
    return OutboxMessage(
        event_id=_event_id(payment_id, label),
        topic="payments.results",
        key=payment_id,
        payload=label.encode(),
    )


async def _finish(store, started: Started, command, status, attempt_status, error=None):
    return await store.finish(
        command.payment_request_id,
        started.attempt_key,
        claim=started.claim.token,
        status=status,
        attempt_status=attempt_status,
        provider_reference=f"ref-{command.payment_request_id}",
        error=error,
        event=_event(command.payment_request_id, status.value),
    )


async def _row(engine, payment_id):
    async with engine.connect() as conn:
        return (
            await conn.execute(select(payments).where(payments.c.id == payment_id))
        ).one_or_none()


async def _attempt(engine, attempt_key):
    async with engine.connect() as conn:
        return (
            await conn.execute(
                select(provider_attempts).where(provider_attempts.c.attempt_key == attempt_key)
            )
        ).one()


async def _outbox_ids(engine) -> set[str]:
    async with engine.connect() as conn:
        return set((await conn.execute(select(outbox.c.event_id))).scalars())


async def test_a_batch_of_begins_is_a_handful_of_statements_in_one_transaction(engine, store):
    commands = [create_payment() for _ in range(50)]
    counts = _counting(engine)
    results = await asyncio.gather(*(_begin(store, c, unexpected_refusal) for c in commands))
    assert all(isinstance(r, Started) for r in results)
    assert counts["transactions"] == 1
    # Lock (PostgreSQL), read, insert payments, insert attempts: not four per payment.
    assert counts["statements"] <= 6
    for command, started in zip(commands, results, strict=True):
        row = await _row(engine, command.payment_request_id)
        assert row.status == PaymentStatus.PROCESSING.value
        assert row.error_code is None
        attempt = await _attempt(engine, started.attempt_key)
        assert attempt.payment_id == command.payment_request_id
        assert attempt.finished_at is None


async def test_concurrent_begins_of_one_order_make_one_payment_and_refuse_the_other(engine, store):
    order_id = unique("order")
    first, second = create_payment(order_id=order_id), create_payment(order_id=order_id)
    others = [create_payment() for _ in range(10)]
    results = await asyncio.gather(*(_begin(store, c) for c in [first, *others, second]))
    mine = [results[0], results[-1]]
    assert sum(isinstance(r, Started) for r in mine) == 1
    refused = next(r for r in mine if isinstance(r, Refused))
    assert refused.error.code is ErrorCode.ORDER_ALREADY_PAID
    assert all(isinstance(r, Started) for r in results[1:-1])
    refused_command = first if isinstance(results[0], Refused) else second
    row = await _row(engine, refused_command.payment_request_id)
    assert row.status == PaymentStatus.FAILED.value
    assert row.error_code == ErrorCode.ORDER_ALREADY_PAID.value
    assert _event_id(refused_command.payment_request_id, "refused") in await _outbox_ids(engine)
    async with engine.connect() as conn:
        attempts = (
            await conn.execute(
                select(func.count())
                .select_from(provider_attempts)
                .join(payments, payments.c.id == provider_attempts.c.payment_id)
                .where(payments.c.order_id == order_id)
            )
        ).scalar_one()
    assert attempts == 1  # only the payment that was let through may reach a provider


async def test_the_same_command_twice_in_a_batch_is_one_payment_and_one_replay(engine, store):
    command = create_payment()
    results = await asyncio.gather(
        _begin(store, command, unexpected_refusal),
        *(_begin(store, create_payment(), unexpected_refusal) for _ in range(5)),
        _begin(store, command, unexpected_refusal),
    )
    started, existing = results[0], results[-1]
    assert isinstance(started, Started)
    assert isinstance(existing, Existing)
    assert existing.same_parameters
    assert existing.open_attempt_key == started.attempt_key
    assert existing.payment.status is PaymentStatus.PROCESSING


async def test_a_redelivery_in_a_batch_finds_its_payment_and_the_order_stays_protected(
    engine, store
):
    known = create_payment()
    started = await _begin(store, known, unexpected_refusal)
    assert await _finish(store, started, known, PaymentStatus.SUCCEEDED, ATTEMPT_SUCCEEDED)
    other_key_same_order = create_payment(order_id=known.order_id)
    fresh = [create_payment() for _ in range(5)]
    results = await asyncio.gather(
        *(_begin(store, c) for c in [*fresh, known, other_key_same_order])
    )
    assert all(isinstance(r, Started) for r in results[:5])
    replay = results[5]
    assert isinstance(replay, Existing)
    assert replay.payment.status is PaymentStatus.SUCCEEDED
    assert replay.open_attempt_key is None
    refused = results[6]
    assert isinstance(refused, Refused)
    assert refused.error.code is ErrorCode.ORDER_ALREADY_PAID


async def test_a_failing_begin_in_a_batch_fails_alone(engine, store):
    paid = create_payment()
    started = await _begin(store, paid, unexpected_refusal)
    assert await _finish(store, started, paid, PaymentStatus.SUCCEEDED, ATTEMPT_SUCCEEDED)
    fresh = [create_payment() for _ in range(5)]
    # The second payment of the paid order is refused, and its refusal_event raises.
    results = await asyncio.gather(
        *(_begin(store, c, unexpected_refusal) for c in fresh),
        _begin(store, create_payment(order_id=paid.order_id), unexpected_refusal),
        return_exceptions=True,
    )
    assert all(isinstance(r, Started) for r in results[:5])
    assert isinstance(results[5], AssertionError)
    for command in fresh:
        assert (await _row(engine, command.payment_request_id)).status == "processing"


async def test_a_batch_of_finishes_with_mixed_outcomes(engine, store):
    commands = [create_payment() for _ in range(6)]
    begun = await asyncio.gather(*(_begin(store, c, unexpected_refusal) for c in commands))
    ok, declined, unknown, again, late_unknown, authorized = zip(commands, begun, strict=True)
    # Two are final already: one will hear its own outcome again, one a late timeout.
    assert await _finish(store, again[1], again[0], PaymentStatus.SUCCEEDED, ATTEMPT_SUCCEEDED)
    assert await _finish(
        store, late_unknown[1], late_unknown[0], PaymentStatus.FAILED, ATTEMPT_DECLINED
    )
    before = await _outbox_ids(engine)
    decline = ErrorInfo(ErrorCode.PAYMENT_DECLINED, "declined", decline_code="do_not_honor")
    timeout = ErrorInfo(ErrorCode.PROVIDER_TIMEOUT, "no answer")
    counts = _counting(engine)
    results = await asyncio.gather(
        _finish(store, ok[1], ok[0], PaymentStatus.SUCCEEDED, ATTEMPT_SUCCEEDED),
        _finish(store, declined[1], declined[0], PaymentStatus.FAILED, ATTEMPT_DECLINED, decline),
        _finish(store, unknown[1], unknown[0], PaymentStatus.PENDING, ATTEMPT_UNKNOWN, timeout),
        _finish(store, again[1], again[0], PaymentStatus.SUCCEEDED, ATTEMPT_SUCCEEDED),
        _finish(
            store,
            late_unknown[1],
            late_unknown[0],
            PaymentStatus.PENDING,
            ATTEMPT_UNKNOWN,
            timeout,
        ),
        _finish(store, authorized[1], authorized[0], PaymentStatus.AUTHORIZED, ATTEMPT_SUCCEEDED),
    )
    assert list(results) == [True, True, True, False, False, True]
    assert counts["transactions"] == 1
    # read, move payments, attempts, outbox, the stray check of a charge reported again
    # (+ BEGIN)
    assert counts["statements"] <= 6

    row = await _row(engine, ok[0].payment_request_id)
    assert (row.status, row.error_code) == ("succeeded", None)
    assert row.provider_reference == f"ref-{ok[0].payment_request_id}"
    row = await _row(engine, declined[0].payment_request_id)
    assert (row.status, row.error_code, row.decline_code) == (
        "failed",
        "payment_declined",
        "do_not_honor",
    )
    row = await _row(engine, unknown[0].payment_request_id)
    assert (row.status, row.error_code) == ("pending", "provider_timeout")
    assert (await _row(engine, again[0].payment_request_id)).status == "succeeded"
    assert (await _row(engine, late_unknown[0].payment_request_id)).status == "failed"
    assert (await _row(engine, authorized[0].payment_request_id)).status == "authorized"

    assert (await _attempt(engine, ok[1].attempt_key)).finished_at is not None
    assert (await _attempt(engine, declined[1].attempt_key)).status == ATTEMPT_DECLINED
    in_doubt = await _attempt(engine, unknown[1].attempt_key)
    assert (in_doubt.status, in_doubt.finished_at) == (ATTEMPT_UNKNOWN, None)

    # Events only for the payments that moved.
    assert await _outbox_ids(engine) - before == {
        _event_id(ok[0].payment_request_id, "succeeded"),
        _event_id(declined[0].payment_request_id, "failed"),
        _event_id(unknown[0].payment_request_id, "pending"),
        _event_id(authorized[0].payment_request_id, "authorized"),
    }


async def test_a_refused_transition_in_a_batch_reaches_only_its_caller(engine, store):
    commands = [create_payment() for _ in range(5)]
    begun = await asyncio.gather(*(_begin(store, c, unexpected_refusal) for c in commands))
    failed_command = commands[0]
    # Failed behind the claim's back (by hand): its holder's success is a refused
    # transition, not a lost claim.
    async with engine.begin() as conn:
        await conn.execute(
            payments.update()
            .where(payments.c.id == failed_command.payment_request_id)
            .values(status=PaymentStatus.FAILED.value)
        )
    results = await asyncio.gather(
        *(
            _finish(store, s, c, PaymentStatus.SUCCEEDED, ATTEMPT_SUCCEEDED)
            for c, s in zip(commands, begun, strict=True)
        ),
        return_exceptions=True,
    )
    error = results[0]
    assert isinstance(error, InvalidTransitionError)
    assert (error.current, error.target) == (PaymentStatus.FAILED, PaymentStatus.SUCCEEDED)
    assert results[1:] == [True] * 4
    assert (await _row(engine, failed_command.payment_request_id)).status == "failed"
    for command in commands[1:]:
        assert (await _row(engine, command.payment_request_id)).status == "succeeded"
    assert _event_id(failed_command.payment_request_id, "succeeded") not in await _outbox_ids(
        engine
    )


async def test_two_finishes_of_one_payment_in_a_batch_record_it_once(engine, store):
    command = create_payment()
    started = await _begin(store, command, unexpected_refusal)
    others = [create_payment() for _ in range(3)]
    others_begun = await asyncio.gather(*(_begin(store, c, unexpected_refusal) for c in others))
    results = await asyncio.gather(
        _finish(store, started, command, PaymentStatus.SUCCEEDED, ATTEMPT_SUCCEEDED),
        *(
            _finish(store, s, c, PaymentStatus.SUCCEEDED, ATTEMPT_SUCCEEDED)
            for c, s in zip(others, others_begun, strict=True)
        ),
        _finish(store, started, command, PaymentStatus.SUCCEEDED, ATTEMPT_SUCCEEDED),
    )
    assert sorted([results[0], results[-1]]) == [False, True]
    assert results[1:-1] == [True] * 3
    async with engine.connect() as conn:
        events = (
            await conn.execute(
                select(func.count())
                .select_from(outbox)
                .where(outbox.c.message_key == command.payment_request_id)
            )
        ).scalar_one()
    assert events == 1
