"""Captures and cancels in bulk decide as one at a time, for random batches (a model test).

Each scenario builds two identical worlds of payments, one per status a follow-up may meet
(authorized, in flight, captured in full or in part, released, captured at once), and
gives both the same random commands: captures of random amounts, cancels, a payment named
twice or more, another order, another client scope, an unknown payment; then the
finishes of what started, with stale claims, duplicates and finishes of the other kind.
One world runs each step's commands together (one group-commit batch: the bulk path of
persistence.follow_up_bulk), the other one after another in the batch's order (the single
path). The answers, the rows and the result events must be the same. Seeded, so a failure
replays.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from typing import Any

import pytest
from sqlalchemy import select

import persistence.follow_up_store as follow_up_store
from consumer.payment_handler import PaymentCommandHandler
from domain.cancels import CancelPayment
from domain.captures import CapturePayment
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode
from domain.status import PaymentStatus
from persistence.cancel_store import CancelStore
from persistence.capture_store import CaptureStore
from persistence.follow_up import FollowUpRefused, FollowUpStarted
from persistence.follow_up_bulk import begin_many, finish_many
from persistence.tables import payments
from providers.registry import Providers
from providers.routing import Router
from telemetry.metrics import Metrics
from tests.integration.test_capture_bulk import (
    _authorized,
    _cancel,
    _capture,
    _event,
    _events,
    _refusal,
)
from tests.integration.test_captures import EVENTS
from tests.support.builders import create_payment

pytestmark = pytest.mark.integration

# Authorized thrice: most commands of a batch meet a payment they may start.
STATES = (
    "authorized",
    "authorized",
    "authorized",
    "capturing",
    "capturing_part",
    "canceling",
    "succeeded",
    "succeeded_part",
    "canceled",
    "captured_at_once",
)
AMOUNTS = (None, None, "4.00", "10.50", "10.51", "3.00")
SCENARIOS = 16
NOT_VOIDED = ErrorInfo(code=ErrorCode.PROVIDER_UNAVAILABLE, message="the provider kept the hold")


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


async def _in_state(authorizer, captures, cancels, state: str) -> tuple[Any, str | None]:
    """A payment in ``state``, and the claim on its follow-up under way (if any)."""
    if state == "captured_at_once":
        command = create_payment()
        await authorizer.handle(command)
        return command, None
    payment = await _authorized(authorizer)
    if state == "authorized":
        return payment, None
    if state in ("capturing", "succeeded", "capturing_part", "succeeded_part"):
        amount = "4.00" if state.endswith("_part") else None
        begun = await captures.begin(_capture(payment, amount), _refusal)
        assert isinstance(begun, FollowUpStarted)
        if state.startswith("capturing"):
            return payment, begun.claim.token
        assert await captures.finish(
            payment.payment_request_id,
            claim=begun.claim.token,
            captured=True,
            error=None,
            event=_event,
        )
        return payment, None
    begun = await cancels.begin(_cancel(payment), _refusal)
    assert isinstance(begun, FollowUpStarted)
    if state == "canceling":
        return payment, begun.claim.token
    assert await cancels.finish(
        payment.payment_request_id,
        claim=begun.claim.token,
        status=PaymentStatus.CANCELED,
        error=None,
        event=_event,
    )
    return payment, None


def _begin_ops(rng: random.Random) -> list[tuple[Any, ...]]:
    ops: list[tuple[Any, ...]] = []
    for _ in range(rng.randint(2, 9)):
        slot = rng.randrange(len(STATES))
        roll = rng.random()
        order = "theirs" if roll < 0.08 else "its"
        client = "intruder" if 0.08 <= roll < 0.16 else None
        if roll > 0.95:
            ops.append(("unknown",))
        elif rng.random() < 0.6:
            ops.append(("capture", slot, rng.choice(AMOUNTS), order, client))
        else:
            ops.append(("cancel", slot, None, order, client))
    return ops


def _command(op: tuple[Any, ...], world: list[Any]) -> CapturePayment | CancelPayment:
    if op[0] == "unknown":
        return _capture(create_payment())
    kind, slot, amount, order, client = op
    payment = world[slot]
    if order != "its":
        payment = dataclasses.replace(payment, order_id="order-of-someone-else")
    if kind == "capture":
        command: CapturePayment | CancelPayment = _capture(payment, amount)
    else:
        command = _cancel(payment)
    return dataclasses.replace(command, client_id=client)


async def _begin(captures, cancels, command) -> Any:
    store = captures if isinstance(command, CapturePayment) else cancels
    return await store.begin(command, _refusal)


def _answer(result: Any) -> tuple[Any, ...]:
    code = result.error.code if isinstance(result, FollowUpRefused) else None
    payment = result.payment
    view = None if payment is None else (payment.status, payment.captured_minor, payment.error)
    return type(result).__name__, code, view


async def _rows(engine, world: list[Any]) -> list[tuple[Any, ...]]:
    seen = []
    async with engine.connect() as conn:
        for payment in world:
            row = (
                await conn.execute(
                    select(payments).where(payments.c.id == payment.payment_request_id)
                )
            ).one()
            seen.append(
                (row.status, row.captured_minor, row.claim_token is not None, row.error_code)
            )
    return seen


async def _finish(captures, cancels, op: tuple[Any, ...], payment, claim: str) -> bool:
    kind, _, outcome, stale = op
    token = "a-claim-taken-over" if stale else claim
    if kind == "capture":
        return await captures.finish(
            payment.payment_request_id,
            claim=token,
            captured=outcome,
            error=None if outcome else NOT_VOIDED,
            event=_event,
        )
    return await cancels.finish(
        payment.payment_request_id,
        claim=token,
        status=PaymentStatus.CANCELED if outcome else PaymentStatus.AUTHORIZED,
        error=None if outcome else NOT_VOIDED,
        event=_event,
    )


def _finish_ops(rng: random.Random, in_flight: dict[int, str]) -> list[tuple[Any, ...]]:
    ops: list[tuple[Any, ...]] = []
    for slot, status in in_flight.items():
        for _ in range(rng.choice((1, 1, 1, 2))):
            right = "capture" if status == "capturing" else "cancel"
            kind = right if rng.random() < 0.85 else ({"capture", "cancel"} - {right}).pop()
            ops.append((kind, slot, rng.random() < 0.7, rng.random() < 0.15))
    rng.shuffle(ops)
    return ops


async def _scenario(engine, authorizer, captures, cancels, rng: random.Random) -> None:
    worlds: list[list[Any]] = [[], []]
    claims: list[dict[int, str]] = [{}, {}]
    for slot, state in enumerate(STATES):
        for world, held in zip(worlds, claims, strict=True):
            payment, claim = await _in_state(authorizer, captures, cancels, state)
            world.append(payment)
            if claim is not None:
                held[slot] = claim

    ops = _begin_ops(rng)
    bulk, single = ([_command(op, world) for op in ops] for world in worlds)
    together = await asyncio.gather(*(_begin(captures, cancels, c) for c in bulk))
    alone = [await _begin(captures, cancels, c) for c in single]
    assert [_answer(r) for r in together] == [_answer(r) for r in alone], ops
    assert await _rows(engine, worlds[0]) == await _rows(engine, worlds[1]), ops
    for world_results, held, world in zip((together, alone), claims, worlds, strict=True):
        for op, result in zip(ops, world_results, strict=True):
            if isinstance(result, FollowUpStarted):
                held[op[1]] = result.claim.token
        assert set(held) == {
            slot
            for slot, row in enumerate(await _rows(engine, world))
            if row[0] in ("capturing", "canceling")
        }
    for first, second in zip(*worlds, strict=True):
        assert await _events(engine, first.payment_request_id) == await _events(
            engine, second.payment_request_id
        ), ops

    rows = await _rows(engine, worlds[0])
    finishes = _finish_ops(rng, {slot: rows[slot][0] for slot in claims[0]})
    together_done = await asyncio.gather(
        *(_finish(captures, cancels, op, worlds[0][op[1]], claims[0][op[1]]) for op in finishes)
    )
    alone_done = [
        await _finish(captures, cancels, op, worlds[1][op[1]], claims[1][op[1]]) for op in finishes
    ]
    assert list(together_done) == alone_done, finishes
    assert await _rows(engine, worlds[0]) == await _rows(engine, worlds[1]), finishes
    for first, second in zip(*worlds, strict=True):
        assert await _events(engine, first.payment_request_id) == await _events(
            engine, second.payment_request_id
        ), finishes


async def test_random_batches_decide_in_bulk_as_one_at_a_time(
    engine,
    authorizer,
    captures,
    cancels,
    monkeypatch,
):
    runs: list[tuple[str, int]] = []

    def counted(name: str, run: Any) -> Any:
        async def run_many(conn: Any, items: Any) -> Any:
            runs.append((name, len(items)))
            return await run(conn, items)

        return run_many

    monkeypatch.setattr(follow_up_store, "begin_many", counted("begin", begin_many))
    monkeypatch.setattr(follow_up_store, "finish_many", counted("finish", finish_many))
    rng = random.Random(20261207)
    for _ in range(SCENARIOS):
        await _scenario(engine, authorizer, captures, cancels, rng)
    # The bulk path was taken, batches of several begins and of several finishes.
    assert any(name == "begin" and size > 2 for name, size in runs)
    assert any(name == "finish" and size > 2 for name, size in runs)
