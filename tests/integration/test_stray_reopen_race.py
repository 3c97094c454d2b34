"""A provider's notice that reopens a key while the stray-charge sweep is asking about it is
never lost, on SQLite and PostgreSQL (persistence.stray_store, its check generation).

The race: the sweep reads an unverified attempt key, asks the provider ("nothing charged
under it"), and marks it verified. In between, the payer pays and the provider's signed
``paid`` notice reopens the key. A mark that overwrote the reopen left the late charge
unverified by nobody: the payer's money taken, the payment not charged, nobody told. The
schedules here park the sweep between the provider's answer and its mark, let the payer pay
and the notice reopen the key, then release the sweep (and the other order, for contrast):
each time the key stays unverified and the next pass finds and reverses the charge.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.stray_charges import StraySweep
from domain.retry import RetryPolicy
from domain.status import PaymentStatus
from persistence.stray_store import StrayCandidate, StrayStore
from persistence.tables import provider_attempts
from providers.port import ChargeRequest
from providers.registry import Providers
from providers.routing import Router
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import ACCOUNT_KEY, UNAVAILABLE_CARD, create_payment
from tests.support.interleaving import Gate, Interleaving

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


@pytest.fixture
def handler(store, provider, clock):
    """Gives up after two calls: the payment fails, its attempt closed as not charged."""
    return PaymentCommandHandler(
        store=store,
        providers=Providers.of(provider),
        router=Router.catch_all(provider.name),
        events=PaymentEvents(PaymentMessages.bundled(), "payments.results"),
        account_key=ACCOUNT_KEY,
        metrics=Metrics(),
        retry_policy=RetryPolicy(max_attempts=2, base_delay_s=0.001, max_delay_s=0.001),
        clock=clock,
    )


async def _unverified(engine) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(provider_attempts.c.attempt_key).where(provider_attempts.c.verified_at.is_(None))
        )
        return sorted(row.attempt_key for row in rows)


async def _charge_under(provider, late, attempt_key):
    """The provider charges ``attempt_key`` after all (the sandbox decides by card, so
    ``late`` has a charging one)."""
    return await provider.charge(
        ChargeRequest(
            attempt_key=attempt_key,
            payment_request_id=late.payment_request_id,
            amount=late.amount,
            payment_method=late.payment_method,
            payer=late.payer,
            payee=late.payee,
            capture=True,
        )
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
    sweep = StraySweep(
        store=strays,
        providers=Providers.of(provider),
        metrics=metrics,
        settle_after=SETTLE,
        clock=clock,
    )
    command, attempt_key = await _failed_payment(handler, store, clock)

    async def payer_pays_and_the_notice_reopens():
        await gate.checkpoint("payer: about to pay")
        late = create_payment(order_id=command.order_id, idempotency_key=command.idempotency_key)
        await _charge_under(provider, late, attempt_key)
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
    assert await _unverified(engine) == [attempt_key]

    report = await sweep.run_once()  # the provider now says: charged

    assert (report.checked, report.found, report.reversed) == (1, 1, 1)
    (refund,) = await provider.acquirer.refunds()
    assert refund.amount_minor == command.amount.minor_units
    (stray,) = await strays.all()
    assert (stray["attempt_key"], stray["status"]) == (attempt_key, "reversed")
    assert await _unverified(engine) == []
    assert (await store.get_payment(command.payment_request_id)).status is PaymentStatus.FAILED
    assert (await sweep.run_once()).checked == 0


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
    assert await _unverified(engine) == [attempt_key]

    (again,) = await strays.candidates(clock.now - SETTLE, 10)
    assert again.generation == 1
    assert await strays.mark_verified(again)
    assert await _unverified(engine) == []
    assert await strays.candidates(clock.now - SETTLE, 10) == []
    # A notice after the mark reopens it, at the next generation: offered again.
    assert await strays.reopen(attempt_key, "sandbox")
    (third,) = await strays.candidates(clock.now - SETTLE, 10)
    assert third.generation == 2
    assert not await strays.mark_verified(again)
