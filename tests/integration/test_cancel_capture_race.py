"""A cancel racing a capture of one authorization: exactly one wins, whatever the timing.

The workers are a CapturePayment handler, a CancelPayment handler (and, in some runs, a
duplicate of either, or the two reconcilers), over the real stores on SQLite and
PostgreSQL. Each stops before every store write, when its provider call is sent and when
the answer is back; a schedule decides who runs next (see tests/support/interleaving.py).
With ``tick_s`` the clock jumps at every step, so claims expire mid-flight and a worker
resumes after another took its work over.

What makes it hold is structural, not timing: the write-ahead moves to ``capturing`` and to
``canceling`` are the same conditional update from ``authorized``, so only one of them
succeeds; the loser is refused without calling the provider.

After every schedule, once the workers are done: no worker raised; the provider never both
captured and voided the charge, captured at most once and voided at most once; the payment
is not left claimed, and says what the provider did (``succeeded`` only if captured,
``canceled`` only if voided, ``authorized`` only if neither). Then a pass of both
reconcilers settles what an answer lost leaves open, and the payment's final status is
exactly the provider's.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from consumer.cancel_handler import CancelCommandHandler
from consumer.cancel_reconciler import CancelReconciler
from consumer.capture_handler import CaptureCommandHandler
from consumer.capture_reconciler import CaptureReconciler
from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from domain.cancels import CancelPayment
from domain.captures import CapturePayment
from domain.errors import ErrorCode, PaygateError
from domain.money import Money
from domain.retry import RetryPolicy
from domain.status import PaymentStatus
from persistence.cancel_store import CancelStore
from persistence.capture_store import CaptureStore
from persistence.group_commit import GroupCommit
from persistence.tables import payments
from providers.charge_only import ChargeOnlyProvider
from providers.errors import ProviderTimeoutError
from providers.port import (
    CancelRequest,
    CaptureRequest,
    ChargeOutcome,
    ChargeStatus,
)
from providers.registry import Providers
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.authorized_payments import Authorized, authorized
from tests.support.checkpointed_store import FOLLOW_UP_WRITES, checkpointed
from tests.support.clock import Clock
from tests.support.interleaving import Interleaving, bounded_schedules, random_schedules

pytestmark = pytest.mark.integration

EVENTS = PaymentEvents(PaymentMessages.bundled(), "payments.results")
AMOUNT = Money(10_000, "EUR")
LEASE = timedelta(seconds=30)
SCHEDULE_LENGTH = 12


class HoldingProvider(ChargeOnlyProvider):
    """One authorized charge, captured or voided at most once, as a provider keeps it: a
    capture of a voided charge (or a void of a captured one) is refused and changes nothing.
    With ``lose_answers``, the first call of each kind is made but its answer is lost (a
    timeout). Stops at checkpoints."""

    def __init__(self, interleaving: Interleaving, charge: str, *, lose_answers: bool) -> None:
        super().__init__()
        self._il = interleaving
        self._charge = charge
        self._lose = {"capture", "cancel"} if lose_answers else set()
        self.state = ChargeStatus.AUTHORIZED
        self.made: list[str] = []  # "capture" / "cancel", each time it changed the charge

    @property
    def name(self) -> str:
        return "sandbox"

    async def capture(self, request: CaptureRequest) -> ChargeOutcome:
        return await self._act("capture", ChargeStatus.SUCCEEDED)

    async def cancel(self, request: CancelRequest) -> ChargeOutcome:
        return await self._act("cancel", ChargeStatus.CANCELED)

    async def _act(self, what: str, target: ChargeStatus) -> ChargeOutcome:
        await self._il.checkpoint(f"provider.{what} sent")
        if self.state is ChargeStatus.AUTHORIZED:
            self.state = target
            self.made.append(what)
        await self._il.checkpoint(f"provider.{what} answered")
        if what in self._lose:
            self._lose.discard(what)
            raise ProviderTimeoutError(self.name, "no answer in time")
        if self.state is not target:
            code = (
                ErrorCode.PAYMENT_NOT_CAPTURABLE
                if what == "capture"
                else ErrorCode.PAYMENT_NOT_CANCELABLE
            )
            raise PaygateError(code, f"the charge is {self.state.value}")
        return ChargeOutcome(target, self._charge)

    async def charge_by_reference(self, provider_reference: str) -> ChargeOutcome | None:
        await self._il.checkpoint("provider.charge_by_reference")
        return ChargeOutcome(self.state, provider_reference)


CheckpointedCaptures = checkpointed(CaptureStore, FOLLOW_UP_WRITES, lease=LEASE, name="captures")
CheckpointedCancels = checkpointed(CancelStore, FOLLOW_UP_WRITES, lease=LEASE, name="cancels")
RETRIES = RetryPolicy(max_attempts=2, base_delay_s=0.001, max_delay_s=0.001)


def capture_handler(store, provider, clock) -> CaptureCommandHandler:
    return CaptureCommandHandler(
        store=store,
        providers=Providers.of(provider),
        events=EVENTS,
        metrics=Metrics(),
        retry_policy=RETRIES,
        clock=clock,
    )


def cancel_handler(store, provider, clock) -> CancelCommandHandler:
    return CancelCommandHandler(
        store=store,
        providers=Providers.of(provider),
        events=EVENTS,
        metrics=Metrics(),
        retry_policy=RETRIES,
        clock=clock,
    )


@dataclass(slots=True)
class Run:
    schedule: list[int]
    payment: Authorized
    provider: HoldingProvider
    interleaving: Interleaving
    clock: Clock
    results: list[object] = field(default_factory=list)

    @property
    def context(self) -> str:
        return f"schedule {self.schedule}; trace {self.interleaving.trace}"


async def run_schedule(
    engine,
    schedule,
    payment: Authorized,
    *,
    kinds: tuple[str, ...],
    lose_answers: bool = False,
    tick_s: float = 0.0,
) -> Run:
    """One worker per entry of ``kinds``: ``capture`` and ``cancel`` handle a command,
    ``capture-reconciler`` and ``cancel-reconciler`` run a pass."""
    clock = Clock()

    def tick() -> None:
        clock.now += timedelta(seconds=tick_s)

    interleaving = Interleaving(schedule, on_step=tick)
    provider = HoldingProvider(interleaving, payment.charge_reference, lose_answers=lose_answers)
    now = datetime.now(UTC)
    capture = CapturePayment.create(
        payment_request_id=payment.payment_id, order_id=payment.order_id, requested_at=now
    )
    cancel = CancelPayment.create(
        payment_request_id=payment.payment_id, order_id=payment.order_id, requested_at=now
    )
    work: list[Callable[[], Awaitable[object]]] = []
    for kind in kinds:
        if kind == "capture":
            captures = CheckpointedCaptures(engine, clock, interleaving)
            work.append(
                functools.partial(capture_handler(captures, provider, clock).handle, capture)
            )
        elif kind == "cancel":
            cancels = CheckpointedCancels(engine, clock, interleaving)
            work.append(functools.partial(cancel_handler(cancels, provider, clock).handle, cancel))
        else:
            work.append(reconciler_pass(engine, kind, provider, clock, interleaving))
    run = Run(list(schedule), payment, provider, interleaving, clock)
    run.results = await interleaving.run(work)
    return run


def reconciler_pass(engine, kind: str, provider, clock, interleaving):
    if kind == "capture-reconciler":
        captures = CheckpointedCaptures(engine, clock, interleaving)
        reconciler: CaptureReconciler | CancelReconciler = CaptureReconciler(
            store=captures,
            handler=capture_handler(captures, provider, clock),
            metrics=Metrics(),
            min_age=timedelta(0),
            clock=clock,
        )
    else:
        cancels = CheckpointedCancels(engine, clock, interleaving)
        reconciler = CancelReconciler(
            store=cancels,
            handler=cancel_handler(cancels, provider, clock),
            metrics=Metrics(),
            min_age=timedelta(0),
            clock=clock,
        )

    async def run() -> int:
        await interleaving.checkpoint(f"{kind}.pass")
        return await reconciler.run_once()

    return run


async def assert_one_winner(engine, run: Run, *, settled: bool) -> None:
    context = run.context
    errors = [r for r in run.results if isinstance(r, BaseException)]
    assert errors == [], context
    made = run.provider.made
    assert made in ([], ["capture"], ["cancel"]), f"{made}; {context}"
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(
                    payments.c.status, payments.c.claim_token, payments.c.claim_expires_at
                ).where(payments.c.id == run.payment.payment_id)
            )
        ).one()
    status = PaymentStatus(row.status)
    assert (row.claim_token, row.claim_expires_at) == (None, None), f"{status}; {context}"
    expected = {
        (): PaymentStatus.AUTHORIZED,
        ("capture",): PaymentStatus.SUCCEEDED,
        ("cancel",): PaymentStatus.CANCELED,
    }[tuple(made)]
    if status is not expected:
        assert not settled, f"{status}, provider made {made}; {context}"
        assert status in (PaymentStatus.CAPTURING, PaymentStatus.CANCELING), context
        # Under way only for what the provider did (or may still do): never the other.
        assert made == [] or (status is PaymentStatus.CAPTURING) == (made == ["capture"]), context


async def settle(engine, run: Run) -> None:
    """Later reconciler passes, once the workers are gone (their claims expired)."""
    run.clock.now += LEASE * 2
    writes = GroupCommit(engine)
    captures = CaptureStore(engine, writes, run.clock, claim_lease=LEASE)
    cancels = CancelStore(engine, writes, run.clock, claim_lease=LEASE)
    await CaptureReconciler(
        store=captures,
        handler=capture_handler(captures, run.provider, run.clock),
        metrics=Metrics(),
        min_age=timedelta(0),
        clock=run.clock,
    ).run_once()
    await CancelReconciler(
        store=cancels,
        handler=cancel_handler(cancels, run.provider, run.clock),
        metrics=Metrics(),
        min_age=timedelta(0),
        clock=run.clock,
    ).run_once()


async def check(engine, run: Run, *, final_at_once: bool) -> None:
    await assert_one_winner(engine, run, settled=final_at_once)
    await settle(engine, run)
    await assert_one_winner(engine, run, settled=True)


def _schedules(workers: int, database: str, every: int) -> list[tuple[int, ...]]:
    """A spread sample of the schedules with up to two preemptions; PostgreSQL runs a
    sparser one (the same code paths, against the other database's locking)."""
    schedules = list(bounded_schedules(workers, SCHEDULE_LENGTH, switches=2))
    return schedules[:: every if database == "sqlite" else every * 5]


# (workers, answers lost, clock step, stride, final without the reconcilers)
VARIANTS = {
    "capture-vs-cancel": (("capture", "cancel"), False, 0.0, 2, True),
    "capture-vs-cancel-zombies": (("capture", "cancel"), False, 20.0, 3, True),
    "capture-vs-cancel-answers-lost": (("capture", "cancel"), True, 0.0, 3, False),
    "cancel-vs-capture-reconciler-lost": (("cancel", "capture-reconciler"), True, 20.0, 4, False),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_a_cancel_and_a_capture_that_cross_make_exactly_one_of_them(engine, variant):
    kinds, lose, tick_s, every, final_at_once = VARIANTS[variant]
    schedules = _schedules(len(kinds), engine.dialect.name, every)
    for schedule, payment in zip(
        schedules, await authorized(engine, len(schedules), AMOUNT), strict=True
    ):
        run = await run_schedule(
            engine, schedule, payment, kinds=kinds, lose_answers=lose, tick_s=tick_s
        )
        await check(engine, run, final_at_once=final_at_once)
        if not lose and "capture-reconciler" not in kinds:
            # Nothing lost: one of the two was made, the other refused, at once.
            assert len(run.provider.made) == 1, run.context
            assert Outcome.REFUSED in run.results, run.context


@pytest.mark.parametrize("tick_s", [0.0, 20.0], ids=["no-expiry", "zombies"])
async def test_duplicated_cancels_and_captures_still_make_one(engine, tick_s):
    count = 16 if engine.dialect.name == "sqlite" else 5
    schedules = list(random_schedules(4, SCHEDULE_LENGTH * 2, count, seed=20261206))
    for schedule, payment in zip(schedules, await authorized(engine, count, AMOUNT), strict=True):
        run = await run_schedule(
            engine,
            schedule,
            payment,
            kinds=("capture", "cancel", "capture", "cancel"),
            tick_s=tick_s,
        )
        await check(engine, run, final_at_once=True)
        assert len(run.provider.made) == 1, run.context
