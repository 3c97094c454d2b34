"""One owner per refund: duplicate refund handlers, a handler and the refund reconciler, and
two different refunds of one payment, interleaved at every await point that matters, on
SQLite and PostgreSQL.

The workers are handlers of one RefundPayment (a redelivery, a copy sent without a Kafka
key, a zombie consumer) and the refund reconciler. Each stops before every store write,
when its provider call is sent and when the answer is back (the reconciler also before its
pass); a schedule decides who runs next (see tests/support/interleaving.py). With
``tick_s`` the clock jumps at every step, so claims expire mid-flight and a worker resumes
after another took its refund over (the zombie case). Two different refunds of one payment
race too, each sent twice, their reservations checked between any two steps.

After every schedule, once the workers are done: no worker raised; the provider refunded
each refund key at most once and never more than was captured; the payment's totals are
its refunds' (``refunded_minor`` the succeeded ones, ``refund_reserved_minor`` the open
ones, their sum within the captured amount); no refund is left claimed. Then a reconciler
pass settles what the provider answers later, and every refund is final, ``succeeded``
exactly when the provider refunded it.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.refund_events import RefundEvents
from consumer.refund_handler import RefundCommandHandler
from consumer.refund_reconciler import RefundReconciler
from domain.money import Money
from domain.refunds import RefundPayment, RefundStatus
from domain.retry import RetryPolicy
from domain.status import PaymentStatus
from persistence.group_commit import GroupCommit
from persistence.payment_store import PaymentStore
from persistence.refund_store import RefundStore
from persistence.tables import payments, refunds
from providers.charge_only import ChargeOnlyProvider
from providers.errors import ProviderTimeoutError, ProviderUnavailableError
from providers.port import (
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
from tests.support.builders import create_payment, unique
from tests.support.checkpointed_store import FOLLOW_UP_WRITES, checkpointed
from tests.support.clock import Clock
from tests.support.interleaving import Interleaving, bounded_schedules, random_schedules

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()
CAPTURED = Money(10_000, "EUR")
LEASE = timedelta(seconds=30)
SCHEDULE_LENGTH = 12


@dataclass(slots=True)
class LedgerRefund:
    """What the provider did for one refund key."""

    charge_reference: str
    amount_minor: int
    status: ProviderRefundStatus
    reference: str


class Charger(ChargeOnlyProvider):
    """Charges at once: makes the payments the schedules refund."""

    def __init__(self) -> None:
        super().__init__()
        self.charges: dict[str, str] = {}  # payment id -> charge reference

    @property
    def name(self) -> str:
        return "sandbox"

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        reference = f"ch_{uuid.uuid4().hex[:12]}"
        self.charges[request.payment_request_id] = reference
        self.outcomes[request.attempt_key] = ChargeOutcome(ChargeStatus.SUCCEEDED, reference)
        return self.outcomes[request.attempt_key]


class ScriptedRefundProvider(ChargeOnlyProvider):
    """Answers refund calls in order from ``script``, then refunds:

    * ``"unavailable"``: a 503 before processing, certainly not refunded;
    * ``"timeout"``: refunded, but the answer is lost (outcome unknown to the caller);
    * ``"pending"``: accepted, settles later: the next status query finds it succeeded.

    Idempotent by refund key, as real providers are: a key it knows is answered with that
    refund's current state, never refunded again. Stops at checkpoints.
    """

    def __init__(self, interleaving: Interleaving, script: list[str]) -> None:
        super().__init__()
        self._il = interleaving
        self._script = list(script)
        self.ledger: dict[str, LedgerRefund] = {}  # by refund key
        self.refunds_made: list[str] = []  # a key twice here is a double refund

    @property
    def name(self) -> str:
        return "sandbox"

    async def refund(self, request: RefundRequest) -> RefundOutcome:
        await self._il.checkpoint("provider.refund sent")
        answer = self._script.pop(0) if self._script else "refund"
        entry = None
        if answer != "unavailable":
            entry = self.ledger.get(request.refund_key)
            if entry is None:
                status = (
                    ProviderRefundStatus.PENDING
                    if answer == "pending"
                    else ProviderRefundStatus.SUCCEEDED
                )
                entry = LedgerRefund(
                    request.charge_reference,
                    request.amount.minor_units,
                    status,
                    f"re_{uuid.uuid4().hex[:12]}",
                )
                self.ledger[request.refund_key] = entry
                self.refunds_made.append(request.refund_key)
        await self._il.checkpoint("provider.refund answered")
        if entry is None:
            raise ProviderUnavailableError(self.name, "503 before processing")
        if answer == "timeout":
            raise ProviderTimeoutError(self.name, "no answer in time")
        return RefundOutcome(entry.status, entry.reference)

    async def refund_status(self, refund_key: str, charge_reference: str) -> RefundOutcome | None:
        await self._il.checkpoint("provider.refund_status")
        entry = self.ledger.get(refund_key)
        if entry is None:
            return None
        if entry.status is ProviderRefundStatus.PENDING:
            entry.status = ProviderRefundStatus.SUCCEEDED  # settled meanwhile
        return RefundOutcome(entry.status, entry.reference)

    def refunded_minor(self, charge_reference: str) -> int:
        """Refunded or being refunded of the charge: what a provider counts against it."""
        return sum(
            e.amount_minor for e in self.ledger.values() if e.charge_reference == charge_reference
        )


CheckpointedRefundStore = checkpointed(RefundStore, FOLLOW_UP_WRITES, lease=LEASE)


@dataclass(slots=True)
class Run:
    """One schedule's run: what the checks need."""

    schedule: list[int]
    payment_id: str
    charge_reference: str
    commands: list[RefundPayment]
    provider: ScriptedRefundProvider
    interleaving: Interleaving
    clock: Clock
    results: list[object] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    @property
    def context(self) -> str:
        return f"schedule {self.schedule}; trace {self.interleaving.trace}"


def refund_handler(store: RefundStore, provider, clock: Clock) -> RefundCommandHandler:
    return RefundCommandHandler(
        store=store,
        providers=Providers.of(provider),
        events=RefundEvents(MESSAGES, "payments.results"),
        metrics=Metrics(),
        retry_policy=RetryPolicy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.001),
        clock=clock,
    )


@dataclass(frozen=True, slots=True)
class Paid:
    payment_id: str
    order_id: str
    charge_reference: str


async def paid(engine, count: int) -> list[Paid]:
    """``count`` succeeded payments of CAPTURED, made through the payment handler, one for
    each schedule (made together: the store's group commit writes them in a few commits)."""
    charger = Charger()
    handler = PaymentCommandHandler(
        store=PaymentStore(engine),
        providers=Providers.of(charger),
        router=Router.catch_all(charger.name),
        events=PaymentEvents(MESSAGES, "payments.results"),
        account_key=b"test-fingerprint-key",
        metrics=Metrics(),
    )
    commands = [create_payment(amount=CAPTURED) for _ in range(count)]
    outcomes = await asyncio.gather(*(handler.handle(c) for c in commands))
    assert set(outcomes) == {Outcome.SUCCEEDED}
    return [
        Paid(c.payment_request_id, c.order_id, charger.charges[c.payment_request_id])
        for c in commands
    ]


async def run_schedule(
    engine,
    schedule,
    payment: Paid,
    *,
    script: list[str],
    amounts: list[Money | None],
    copies: int,
    tick_s: float = 0.0,
    reconciler: bool = False,
    every_step: bool = False,
) -> Run:
    """Run ``copies`` handlers of each refund of ``amounts`` (the first refund's copies
    first), plus the reconciler if asked, under ``schedule``. With ``every_step``, the
    payment's totals are checked between any two steps too."""
    clock = Clock()

    def tick() -> None:
        clock.now += timedelta(seconds=tick_s)

    run: Run | None = None

    async def observe() -> None:
        assert run is not None
        problem = await reservation_problem(engine, run.payment_id)
        if problem is not None:
            run.violations.append(f"after {len(run.interleaving.trace)} steps: {problem}")

    interleaving = Interleaving(schedule, on_step=tick, observe=observe if every_step else None)
    provider = ScriptedRefundProvider(interleaving, script)
    commands = [
        RefundPayment.create(
            idempotency_key=unique("refund"),
            payment_request_id=payment.payment_id,
            order_id=payment.order_id,
            amount=amount,
            reason="requested_by_customer",
            requested_at=datetime.now(UTC),
        )
        for amount in amounts
    ]
    run = Run(
        list(schedule),
        payment.payment_id,
        payment.charge_reference,
        commands,
        provider,
        interleaving,
        clock,
    )
    work: list[Callable[[], Awaitable[object]]] = []
    for command in commands:
        for _ in range(copies):
            handler = refund_handler(
                CheckpointedRefundStore(engine, clock, interleaving), provider, clock
            )
            work.append(functools.partial(handler.handle, command))
    if reconciler:
        store = CheckpointedRefundStore(engine, clock, interleaving)
        reconciler_ = RefundReconciler(
            store=store,
            handler=refund_handler(store, provider, clock),
            metrics=Metrics(),
            min_age=timedelta(0),
            clock=clock,
        )

        async def reconcile() -> int:
            # When the pass starts decides what it finds open (its cut-off is read then).
            await interleaving.checkpoint("reconciler.pass")
            return await reconciler_.run_once()

        work.append(reconcile)
    run.results = await interleaving.run(work)
    return run


async def reservation_problem(engine, payment_id: str) -> str | None:
    """What is wrong with the payment's totals at any moment, or None."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(
                    payments.c.amount_minor,
                    payments.c.refunded_minor,
                    payments.c.refund_reserved_minor,
                ).where(payments.c.id == payment_id)
            )
        ).one()
    if row.refunded_minor + row.refund_reserved_minor > row.amount_minor or min(row) < 0:
        return (
            f"refunded {row.refunded_minor} + reserved {row.refund_reserved_minor}"
            f" of {row.amount_minor}"
        )
    return None


async def assert_refunds_held(engine, run: Run, *, settled: bool) -> None:
    """The invariants once no worker runs; with ``settled``, every refund is final too."""
    context = run.context
    assert run.violations == [], context
    errors = [r for r in run.results if isinstance(r, BaseException)]
    assert errors == [], context
    provider = run.provider
    doubles = [k for k, n in _counts(provider.refunds_made).items() if n > 1]
    assert doubles == [], f"double refund {doubles}; {context}"
    assert provider.refunded_minor(run.charge_reference) <= CAPTURED.minor_units, (
        f"refunded above the captured amount: {provider.ledger}; {context}"
    )
    assert await reservation_problem(engine, run.payment_id) is None, context
    async with engine.connect() as conn:
        payment = (
            await conn.execute(select(payments).where(payments.c.id == run.payment_id))
        ).one()
        stored = (
            await conn.execute(select(refunds).where(refunds.c.payment_id == run.payment_id))
        ).all()
    assert {r.id for r in stored} == {c.refund_id for c in run.commands}, context
    claimed = [r.id for r in stored if (r.claim_token, r.claim_expires_at) != (None, None)]
    assert claimed == [], f"claim left; {context}"
    open_rows = [r for r in stored if r.status in ("processing", "pending")]
    succeeded = [r for r in stored if r.status == RefundStatus.SUCCEEDED.value]
    assert payment.refunded_minor == sum(r.amount_minor for r in succeeded), context
    assert payment.refund_reserved_minor == sum(r.amount_minor for r in open_rows), context
    for row in stored:
        entry = provider.ledger.get(row.id)
        if row.status == RefundStatus.SUCCEEDED.value:
            assert entry is not None, f"{row.id} stored succeeded, not refunded; {context}"
            assert entry.status is ProviderRefundStatus.SUCCEEDED, context
            assert entry.amount_minor == row.amount_minor, context
        elif row.status == RefundStatus.FAILED.value:
            assert entry is None, f"{row.id} stored failed, refunded at the provider; {context}"
    if not settled:
        return
    assert open_rows == [], f"refunds left open {[r.id for r in open_rows]}; {context}"
    assert set(provider.ledger) == {r.id for r in succeeded}, context
    refunded = payment.refunded_minor
    expected = (
        PaymentStatus.SUCCEEDED
        if refunded == 0
        else PaymentStatus.REFUNDED
        if refunded == payment.amount_minor
        else PaymentStatus.PARTIALLY_REFUNDED
    )
    assert payment.status == expected.value, context


async def settle(engine, run: Run) -> None:
    """What a later reconciler pass does once the workers are gone: the provider's late
    answers (a lost one, a pending refund) are recorded."""
    run.clock.now += LEASE * 2
    store = RefundStore(engine, GroupCommit(engine), run.clock, claim_lease=LEASE)
    reconciler = RefundReconciler(
        store=store,
        handler=refund_handler(store, run.provider, run.clock),
        metrics=Metrics(),
        min_age=timedelta(0),
        clock=run.clock,
    )
    await reconciler.run_once()


async def check(engine, run: Run, *, final_at_once: bool) -> None:
    """All the invariants, before and after the settling pass. ``final_at_once``: the
    scenario leaves nothing for the reconciler (no answer comes later)."""
    await assert_refunds_held(engine, run, settled=final_at_once)
    await settle(engine, run)
    await assert_refunds_held(engine, run, settled=True)


def _counts(items: list[str]) -> dict[str, int]:
    return {k: len(list(g)) for k, g in itertools.groupby(sorted(items))}


def _schedules(workers: int, database: str, every: int = 1):
    """Every ``every``-th schedule with up to two preemptions: a spread sample, so that the
    file stays fast (the schedules found failing are run as regression tests besides).
    PostgreSQL runs a sparser sample: the same code paths, against the other database's
    locking."""
    schedules = list(bounded_schedules(workers, SCHEDULE_LENGTH, switches=2))
    return schedules[:: every if database == "sqlite" else every * 6]


def _database(engine) -> str:
    return engine.dialect.name


# (script, clock step, sample stride, final without the reconciler)
VARIANTS = {
    "503-once-zombies": (["unavailable"], 20.0, 3, True),
    "503-once": (["unavailable"], 0.0, 8, True),
    "timeout-then-known-zombies": (["timeout"], 20.0, 8, False),
    "pending-then-settles-zombies": (["pending"], 20.0, 8, False),
    "503-until-retries-run-out-zombies": (["unavailable"] * 3, 20.0, 8, False),
}
SIXTY = Money(6_000, "EUR")


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_two_handlers_of_one_refund_refund_it_once(engine, variant):
    script, tick_s, every, final_at_once = VARIANTS[variant]
    schedules = _schedules(2, _database(engine), every)
    for schedule, payment in zip(schedules, await paid(engine, len(schedules)), strict=True):
        run = await run_schedule(
            engine, schedule, payment, script=script, amounts=[SIXTY], copies=2, tick_s=tick_s
        )
        await check(engine, run, final_at_once=final_at_once)


@pytest.mark.parametrize("tick_s", [0.0, 20.0], ids=["no-expiry", "zombies"])
async def test_three_handlers_of_one_refund_refund_it_once(engine, tick_s):
    count = 15 if _database(engine) == "sqlite" else 5
    schedules = list(random_schedules(3, SCHEDULE_LENGTH * 2, count, seed=20261207))
    for schedule, payment in zip(schedules, await paid(engine, count), strict=True):
        run = await run_schedule(
            engine,
            schedule,
            payment,
            script=["unavailable"],
            amounts=[None],
            copies=3,
            tick_s=tick_s,
        )
        await check(engine, run, final_at_once=True)


@pytest.mark.parametrize(
    "variant",
    ["503-once-zombies", "timeout-then-known-zombies", "pending-then-settles-zombies"],
)
async def test_a_refund_handler_and_the_reconciler_refund_once(engine, variant):
    script, tick_s, _every, _final = VARIANTS[variant]
    schedules = _schedules(2, _database(engine), every=8)
    for schedule, payment in zip(schedules, await paid(engine, len(schedules)), strict=True):
        run = await run_schedule(
            engine,
            schedule,
            payment,
            script=script,
            amounts=[SIXTY],
            copies=1,
            tick_s=tick_s,
            reconciler=True,
        )
        # The reconciler may find nothing open yet, or the handler's claim alive; whichever
        # way, the invariants hold once both are done.
        await check(engine, run, final_at_once=False)
        assert run.results[0] in set(Outcome), run.context


# Two refunds (workers 0 and 1 send the first, 2 and 3 the second). The first schedule
# released the first refund's reservation while a call refunding it was still on its way,
# and the second refund then took the whole amount: 160.00 refunded on a 100.00 charge.
OVER_REFUND = (0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0)


@pytest.mark.parametrize(
    ("script", "tick_s"),
    [(["unavailable"], 20.0), (["timeout"], 20.0), (["unavailable"] * 3, 20.0)],
    ids=["503-once-zombies", "timeout-then-known-zombies", "503-until-retries-run-out-zombies"],
)
async def test_two_refunds_of_one_payment_never_reserve_more_than_captured(engine, script, tick_s):
    """60.00 and "all that remains" of 100.00, each sent twice: whichever reserves first,
    refunded plus reserved stays within the captured amount between any two steps, and the
    provider never refunds more than was captured."""
    sqlite = _database(engine) == "sqlite"
    schedules = [
        OVER_REFUND,
        *list(bounded_schedules(4, SCHEDULE_LENGTH, switches=2))[:: 200 if sqlite else 600],
        *random_schedules(4, SCHEDULE_LENGTH * 2, 4 if sqlite else 2, seed=20261208),
    ]
    for schedule, payment in zip(schedules, await paid(engine, len(schedules)), strict=True):
        run = await run_schedule(
            engine,
            schedule,
            payment,
            script=script,
            amounts=[SIXTY, None],
            copies=2,
            tick_s=tick_s,
            every_step=True,
        )
        await check(engine, run, final_at_once=script == ["unavailable"])


async def test_a_refund_taken_over_stays_pending_while_a_former_call_may_refund(engine):
    """The schedule that found it: worker 0's call is on its way when worker 1 takes the
    refund over and hears 503 three times. Failing the refund then (and releasing its
    reservation) would deny the refund that worker 0's call makes next."""
    (payment,) = await paid(engine, 1)
    run = await run_schedule(
        engine,
        # Worker 1: its claim, the renewal before its question, the question, then a
        # renewal, a send and its 503 three times.
        (0, *[1] * 12),
        payment,
        script=["unavailable"] * 3,
        amounts=[SIXTY],
        copies=2,
        tick_s=20.0,
    )
    assert run.results == [Outcome.REPLAYED, Outcome.PENDING], run.context
    assert list(run.provider.ledger) == [run.commands[0].refund_id], run.context
    refund = await RefundStore(engine, GroupCommit(engine)).get(run.commands[0].refund_id)
    assert refund is not None
    assert refund.status is RefundStatus.PENDING, run.context
    await check(engine, run, final_at_once=False)
    refund = await RefundStore(engine, GroupCommit(engine)).get(run.commands[0].refund_id)
    assert refund is not None
    assert refund.status is RefundStatus.SUCCEEDED, run.context
