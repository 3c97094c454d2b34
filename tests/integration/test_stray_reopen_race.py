"""A provider's notice that reopens a key while the stray-charge sweep is asking about it is
never lost, on SQLite and PostgreSQL (persistence.stray_store, its check generation).

The race: the sweep reads an unverified attempt key, asks the provider ("nothing charged
under it"), and marks it verified. In between, the payer pays and the provider's signed
``paid`` notice reopens the key. A mark that overwrote the reopen left the late charge
unverified by nobody: the payer's money taken, the payment not charged, nobody told. The
schedules here park the sweep between the provider's answer and its mark, let the payer pay
and the notice reopen the key, then release the sweep (and the other order, for contrast):
each time the key stays unverified and the next pass finds and reverses the charge; and
every schedule, up to two switches, of a pass and a payer who pays and is notified. Then
real concurrency: the notice's transaction holds the reopened row uncommitted while the
sweep's mark (``mark_verified``, ``mark_own_charges``) or its stamp (``ask_again_at``)
arrives and, on PostgreSQL, waits on its lock; once the reopen commits, the mark or stamp
must find the generation moved on.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import cast

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from consumer.outcome import Outcome
from consumer.stray_charges import StraySweep
from domain.status import PaymentStatus
from persistence.engine import write_transaction
from persistence.group_commit import GroupCommit
from persistence.lock_order import RowLocks, take_locks
from persistence.stray_store import StrayCandidate, StrayStore
from providers.registry import Providers
from tests.support.builders import UNAVAILABLE_CARD, create_payment
from tests.support.interleaving import Gate, Interleaving, bounded_schedules
from tests.support.stray_setup import (
    charge_under,
    handler_giving_up_after_two_calls,
    unverified_keys,
)

pytestmark = pytest.mark.integration

SETTLE = timedelta(minutes=5)
SWEEP, PAYER = 0, 1


class ParkedBeforeMark(StrayStore):
    """The real store; its mark of a verified key stops at the gate first, i.e. after the
    sweep had the provider's answer and before it records it."""

    def __init__(self, gate: Gate, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._gate = gate

    async def mark_verified(self, candidate: StrayCandidate) -> bool:
        await self._gate.checkpoint("sweep: provider answered, about to mark")
        return await super().mark_verified(candidate)


class ParkedBeforeEveryStep(ParkedBeforeMark):
    """Also stops once it has read the candidates (before asking the provider) and before
    recording a charge it found."""

    async def candidates(self, settled_before, limit):
        found = await super().candidates(settled_before, limit)
        await self._gate.checkpoint("sweep: read the candidates, about to ask")
        return found

    async def record_found(self, candidate, provider_reference):
        await self._gate.checkpoint("sweep: provider answered charged, about to record")
        return await super().record_found(candidate, provider_reference)


@pytest.fixture
def handler(store, provider, clock):
    """Gives up after two calls: the payment fails, its attempt closed as not charged."""
    return handler_giving_up_after_two_calls(store, provider, clock)


def _sweep(strays, provider, metrics, clock) -> StraySweep:
    return StraySweep(
        store=strays,
        providers=Providers.of(provider),
        metrics=metrics,
        settle_after=SETTLE,
        clock=clock,
    )


async def _failed_payment(handler, store, clock):
    """A failed payment whose one attempt is a candidate (closed, settled, unverified)."""
    command = create_payment(payer_number=UNAVAILABLE_CARD)
    assert await handler.handle(command) is Outcome.FAILED
    clock.now += SETTLE + timedelta(minutes=1)
    return command, f"{command.payment_request_id}-a1"


@pytest.mark.parametrize(
    "schedule",
    [(PAYER, SWEEP), (SWEEP, PAYER)],
    ids=["notice-between-answer-and-mark", "notice-after-mark"],
)
async def test_a_key_reopened_around_the_sweeps_mark_is_asked_again_and_its_charge_reversed(
    handler, store, provider, metrics, clock, engine, schedule
):
    gate = Gate()
    strays = ParkedBeforeMark(gate, store.engine, store.writes, clock)
    sweep = _sweep(strays, provider, metrics, clock)
    command, attempt_key = await _failed_payment(handler, store, clock)

    async def payer_pays_and_the_notice_reopens():
        await gate.checkpoint("payer: about to pay")
        late = create_payment(order_id=command.order_id, idempotency_key=command.idempotency_key)
        await charge_under(provider, late, attempt_key)
        return await strays.reopen(attempt_key, provider.name)  # the signed notice

    interleaving = Interleaving(schedule)
    gate.interleaving = interleaving
    first, reopened = await interleaving.run([sweep.run_once, payer_pays_and_the_notice_reopens])
    gate.interleaving = None

    assert reopened is True
    # Both were parked there before the schedule chose who goes first.
    assert sorted(label for _, label in interleaving.trace) == [
        "payer: about to pay",
        "sweep: provider answered, about to mark",
    ]
    assert first.checked == 1
    # Reopened before the mark: the mark changed nothing. After it: the reopen undid it.
    assert (first.verified, first.reopened) == ((0, 1) if schedule[0] == PAYER else (1, 0))
    assert await unverified_keys(engine) == [attempt_key]

    report = await sweep.run_once()  # the provider now says: charged

    assert (report.checked, report.found, report.reversed) == (1, 1, 1)
    (refund,) = await provider.acquirer.refunds()
    assert refund.amount_minor == command.amount.minor_units
    (stray,) = await strays.all()
    assert (stray["attempt_key"], stray["status"]) == (attempt_key, "reversed")
    assert await unverified_keys(engine) == []
    assert (await store.get_payment(command.payment_request_id)).status is PaymentStatus.FAILED
    assert (await sweep.run_once()).checked == 0


async def test_every_schedule_of_a_pass_and_a_late_payment_ends_with_the_charge_reversed(
    handler, store, provider, metrics, clock, engine
):
    """Every interleaving (up to two switches) of one sweep pass with a payer who pays and
    whose notice reopens the key: the passes that follow find the charge and reverse it,
    once."""
    schedules = list(bounded_schedules(2, 4, 2))
    assert len(schedules) > 2
    for schedule in schedules:
        gate = Gate()
        strays = ParkedBeforeEveryStep(gate, store.engine, store.writes, clock)
        sweep = _sweep(strays, provider, metrics, clock)
        command, attempt_key = await _failed_payment(handler, store, clock)
        refunds_before = len(await provider.acquirer.refunds())

        async def payer(command=command, attempt_key=attempt_key, gate=gate, strays=strays):
            await gate.checkpoint("payer: about to pay")
            late = create_payment(
                order_id=command.order_id, idempotency_key=command.idempotency_key
            )
            charged = await charge_under(provider, late, attempt_key)
            await gate.checkpoint("payer: paid, the notice about to reopen")
            await strays.reopen(attempt_key, provider.name)
            return charged

        interleaving = Interleaving(schedule)
        gate.interleaving = interleaving
        report, charged = await interleaving.run([sweep.run_once, payer])
        gate.interleaving = None
        assert not isinstance(report, Exception), (schedule, report)
        for _ in range(2):  # at most two more passes: ask again, then nothing left
            await sweep.run_once()

        refunds = (await provider.acquirer.refunds())[refunds_before:]
        assert [r.charge_id for r in refunds] == [charged.provider_reference], schedule
        recorded = [r for r in await strays.all() if r["attempt_key"] == attempt_key]
        assert [r["status"] for r in recorded] == ["reversed"], schedule
        assert attempt_key not in await unverified_keys(engine), schedule


async def test_a_mark_of_a_candidate_read_before_a_reopen_changes_nothing(
    handler, store, clock, engine
):
    """The store alone: the generation a candidate was read with decides the mark."""
    strays = StrayStore(store.engine, store.writes, clock)
    _command, attempt_key = await _failed_payment(handler, store, clock)
    (read,) = await strays.candidates(clock.now - SETTLE, 10)
    assert read.generation == 0

    assert await strays.reopen(attempt_key, "sandbox")
    assert not await strays.mark_verified(read)
    assert await unverified_keys(engine) == [attempt_key]

    (again,) = await strays.candidates(clock.now - SETTLE, 10)
    assert again.generation == 1
    assert await strays.mark_verified(again)
    assert await unverified_keys(engine) == []
    assert await strays.candidates(clock.now - SETTLE, 10) == []
    # A notice after the mark reopens it, at the next generation: offered again.
    assert await strays.reopen(attempt_key, "sandbox")
    (third,) = await strays.candidates(clock.now - SETTLE, 10)
    assert third.generation == 2
    assert not await strays.mark_verified(again)


class OnConnection:
    """Writes that run on one open transaction, for a store write left uncommitted."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def run(self, operation, bulk=None, *, locks: RowLocks | None = None):
        # As the writer queue does: the declared locks first (persistence.lock_order).
        if locks is not None:
            await take_locks(self._conn, locks)
        return await operation(self._conn)


def _uncommitted(engine, conn: AsyncConnection, clock) -> StrayStore:
    """The real store, its writes on ``conn``'s transaction (committed by the caller)."""
    # Only ``run`` of the writer is used: OnConnection stands in for the GroupCommit.
    return StrayStore(engine, cast(GroupCommit, OnConnection(conn)), clock)


async def _until_a_writer_waits_on_a_lock(engine) -> None:
    """PostgreSQL: until a session of this database waits on a row lock (bounded). SQLite
    serialises writers at ``BEGIN IMMEDIATE``: the mark runs wholly after the reopen's
    commit, which the outcome below must hold for as well."""
    if engine.dialect.name != "postgresql":
        return
    async with engine.connect() as conn:
        for _ in range(2_000):
            waiting = await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            )
            if waiting:
                return
            await conn.rollback()  # a fresh snapshot of the activity view next time
    raise AssertionError("the mark never waited on the reopen's row lock")


async def test_a_mark_that_waits_on_a_reopen_in_flight_changes_nothing_once_it_commits(
    handler, store, clock, engine
):
    """Real concurrency: the notice's transaction has reopened the key (row locked, not
    committed) when the sweep's mark arrives; on PostgreSQL the mark waits for it, then
    re-reads its ``WHERE`` on the committed row, where the generation moved on."""
    strays = StrayStore(store.engine, store.writes, clock)
    _command, attempt_key = await _failed_payment(handler, store, clock)
    (read,) = await strays.candidates(clock.now - SETTLE, 10)

    async with write_transaction(engine) as notice:
        assert await _uncommitted(engine, notice, clock).reopen(attempt_key, "sandbox")
        mark = asyncio.ensure_future(strays.mark_verified(read))
        await _until_a_writer_waits_on_a_lock(engine)

    assert await mark is False
    assert await unverified_keys(engine) == [attempt_key]
    (again,) = await strays.candidates(clock.now - SETTLE, 10)
    assert again.generation == read.generation + 1


async def test_a_stamp_that_waits_on_a_reopen_in_flight_leaves_the_key_first(
    handler, store, clock, engine
):
    """The sweep's stamp before its question (``ask_again_at``, an ordering hint) arrives
    while the notice's reopen holds the row: once the reopen commits, the stamp finds the
    generation moved on and writes nothing, so the next pass reads the key at once."""
    strays = StrayStore(store.engine, store.writes, clock)
    _command, attempt_key = await _failed_payment(handler, store, clock)
    (read,) = await strays.candidates(clock.now - SETTLE, 10)

    async with write_transaction(engine) as notice:
        assert await _uncommitted(engine, notice, clock).reopen(attempt_key, "sandbox")
        stamp = asyncio.ensure_future(strays.ask_again_at(read, clock.now + timedelta(hours=1)))
        await _until_a_writer_waits_on_a_lock(engine)

    assert await stamp is False
    (again,) = await strays.candidates(clock.now - SETTLE, 10)  # not held back
    assert (again.attempt_key, again.generation) == (attempt_key, read.generation + 1)


async def test_own_charges_marked_while_a_reopen_is_in_flight_keep_the_reopen(
    handler, store, clock, engine
):
    """mark_own_charges must not overwrite a reopen in flight. On PostgreSQL its read
    skips the attempts another transaction holds (``SKIP LOCKED``: rows chosen by a query
    are never waited for, persistence.lock_order), so it passes over the reopened key at
    once and leaves it to its next pass. SQLite serialises the two: the pass reads after
    the reopen, and marks the captured payment's own attempt at the generation it then
    has."""
    strays = StrayStore(store.engine, store.writes, clock)
    paid = create_payment()
    assert await handler.handle(paid) is Outcome.SUCCEEDED
    own_key = f"{paid.payment_request_id}-a1"

    async with write_transaction(engine) as notice:
        assert await _uncommitted(engine, notice, clock).reopen(own_key, "sandbox")
        marking = asyncio.ensure_future(strays.mark_own_charges(10))
        if engine.dialect.name == "postgresql":
            # Done while the reopen still holds the row: skipped, not waited for.
            assert await marking == 0

    if engine.dialect.name == "postgresql":
        assert await unverified_keys(engine) == [own_key]
    else:
        assert await marking == 1
        assert await unverified_keys(engine) == []
