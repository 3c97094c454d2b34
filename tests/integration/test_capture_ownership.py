"""One owner per capture: duplicate capture handlers, and a handler with the capture
reconciler, interleaved at every await point that matters, on SQLite and PostgreSQL.

The workers are handlers of one CapturePayment of an authorized payment (a redelivery, a
copy sent without a Kafka key, a zombie consumer) and the capture reconciler. Each stops
before every store write, when its provider call is sent and when the answer is back; a
schedule decides who runs next (see tests/support/interleaving.py). With ``tick_s`` the
clock jumps at every step, so claims expire mid-flight and a worker resumes after another
took the capture over (the zombie case).

After every schedule, once the workers are done: no worker raised; the provider captured
the charge at most once, only under the payment's capture key; the payment is not left
claimed, and is ``succeeded`` only if the provider captured it. Then a reconciler pass
settles what the provider answers later, and the payment is ``succeeded`` exactly when the
provider captured it.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from consumer.capture_handler import CaptureCommandHandler
from consumer.capture_reconciler import CaptureReconciler
from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from domain.captures import CapturePayment, capture_key_for
from domain.money import Money
from domain.retry import RetryPolicy
from domain.status import PaymentStatus
from persistence.capture_store import CaptureStore
from persistence.group_commit import GroupCommit
from persistence.tables import payments
from providers.charge_only import ChargeOnlyProvider
from providers.errors import ProviderTimeoutError, ProviderUnavailableError
from providers.port import CaptureRequest, ChargeOutcome, ChargeStatus
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


class ScriptedCaptureProvider(ChargeOnlyProvider):
    """Holds one authorized charge; answers capture calls in order from ``script``, then
    captures:

    * ``"unavailable"``: a 503 before processing, certainly not captured;
    * ``"timeout"``: captured, but the answer is lost (outcome unknown to the caller).

    Idempotent by capture key, as real providers are: a key it knows is answered with the
    capture it made, never captured again. Stops at checkpoints.
    """

    def __init__(self, interleaving: Interleaving, script: list[str], charge: str) -> None:
        super().__init__()
        self._il = interleaving
        self._script = list(script)
        self._charge = charge
        self.captured: dict[str, str] = {}  # charge reference -> capture key
        self.captures_made: list[tuple[str, str]] = []  # (charge, key): twice is a double

    @property
    def name(self) -> str:
        return "sandbox"

    async def capture(self, request: CaptureRequest) -> ChargeOutcome:
        await self._il.checkpoint("provider.capture sent")
        answer = self._script.pop(0) if self._script else "capture"
        if answer != "unavailable" and request.capture_key not in self.captured.values():
            self.captured[request.charge_reference] = request.capture_key
            self.captures_made.append((request.charge_reference, request.capture_key))
        await self._il.checkpoint("provider.capture answered")
        if answer == "unavailable":
            raise ProviderUnavailableError(self.name, "503 before processing")
        if answer == "timeout":
            raise ProviderTimeoutError(self.name, "no answer in time")
        return ChargeOutcome(ChargeStatus.SUCCEEDED, request.charge_reference)

    async def charge_by_reference(self, provider_reference: str) -> ChargeOutcome | None:
        await self._il.checkpoint("provider.charge_by_reference")
        if provider_reference in self.captured:
            return ChargeOutcome(ChargeStatus.SUCCEEDED, provider_reference)
        if provider_reference == self._charge:
            return ChargeOutcome(ChargeStatus.AUTHORIZED, provider_reference)
        return None


CheckpointedCaptureStore = checkpointed(CaptureStore, FOLLOW_UP_WRITES, lease=LEASE)


@dataclass(slots=True)
class Run:
    """One schedule's run: what the checks need."""

    schedule: list[int]
    payment_id: str
    charge_reference: str
    provider: ScriptedCaptureProvider
    interleaving: Interleaving
    clock: Clock
    results: list[object] = field(default_factory=list)

    @property
    def context(self) -> str:
        return f"schedule {self.schedule}; trace {self.interleaving.trace}"


def capture_handler(store: CaptureStore, provider, clock: Clock) -> CaptureCommandHandler:
    return CaptureCommandHandler(
        store=store,
        providers=Providers.of(provider),
        events=EVENTS,
        metrics=Metrics(),
        retry_policy=RetryPolicy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.001),
        clock=clock,
    )


async def run_schedule(
    engine,
    schedule,
    payment: Authorized,
    *,
    script: list[str],
    workers: int,
    tick_s: float = 0.0,
    reconciler: bool = False,
) -> Run:
    """Run ``workers`` duplicate handlers of the payment's capture (plus the reconciler if
    asked) under ``schedule``."""
    clock = Clock()

    def tick() -> None:
        clock.now += timedelta(seconds=tick_s)

    interleaving = Interleaving(schedule, on_step=tick)
    provider = ScriptedCaptureProvider(interleaving, script, payment.charge_reference)
    command = CapturePayment.create(
        payment_request_id=payment.payment_id,
        order_id=payment.order_id,
        requested_at=datetime.now(UTC),
    )
    work: list[Callable[[], Awaitable[object]]] = []
    for _ in range(workers):
        handler = capture_handler(
            CheckpointedCaptureStore(engine, clock, interleaving), provider, clock
        )
        work.append(functools.partial(handler.handle, command))
    if reconciler:
        store = CheckpointedCaptureStore(engine, clock, interleaving)
        reconciler_ = CaptureReconciler(
            store=store,
            handler=capture_handler(store, provider, clock),
            metrics=Metrics(),
            min_age=timedelta(0),
            clock=clock,
        )

        async def reconcile() -> int:
            # When the pass starts decides what it finds (its cut-off is read then).
            await interleaving.checkpoint("reconciler.pass")
            return await reconciler_.run_once()

        work.append(reconcile)
    run = Run(
        list(schedule),
        payment.payment_id,
        payment.charge_reference,
        provider,
        interleaving,
        clock,
    )
    run.results = await interleaving.run(work)
    return run


async def assert_captured_once(engine, run: Run, *, settled: bool) -> None:
    """The invariants once no worker runs; with ``settled``, the capture is final too."""
    context = run.context
    errors = [r for r in run.results if isinstance(r, BaseException)]
    assert errors == [], context
    made = run.provider.captures_made
    assert len(made) <= 1, f"captured twice {made}; {context}"
    assert made in ([], [(run.charge_reference, capture_key_for(run.payment_id))]), context
    captured = bool(made)
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(
                    payments.c.status, payments.c.claim_token, payments.c.claim_expires_at
                ).where(payments.c.id == run.payment_id)
            )
        ).one()
    status = PaymentStatus(row.status)
    claim = (row.claim_token, row.claim_expires_at)
    assert claim == (None, None), f"claim left on a {status} payment; {context}"
    if status is PaymentStatus.SUCCEEDED:
        assert captured, f"stored captured, not captured at the provider; {context}"
    elif status is PaymentStatus.AUTHORIZED:
        assert not captured, f"stored not captured, captured at the provider; {context}"
    else:
        assert status is PaymentStatus.CAPTURING, context
        assert not settled, f"capture left unsettled; {context}"


async def settle(engine, run: Run) -> None:
    """What a later reconciler pass does once the workers are gone: a capture whose answer
    was lost is recorded."""
    run.clock.now += LEASE * 2
    store = CaptureStore(engine, GroupCommit(engine), run.clock, claim_lease=LEASE)
    await CaptureReconciler(
        store=store,
        handler=capture_handler(store, run.provider, run.clock),
        metrics=Metrics(),
        min_age=timedelta(0),
        clock=run.clock,
    ).run_once()


async def check(engine, run: Run, *, final_at_once: bool) -> None:
    """All the invariants, before and after the settling pass. ``final_at_once``: the
    scenario leaves nothing for the reconciler (no answer comes later)."""
    await assert_captured_once(engine, run, settled=final_at_once)
    await settle(engine, run)
    await assert_captured_once(engine, run, settled=True)


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
    "503-once-zombies": (["unavailable"], 20.0, 2, True),
    "503-once": (["unavailable"], 0.0, 6, True),
    "timeout-then-known-zombies": (["timeout"], 20.0, 4, False),
    "503-until-retries-run-out-zombies": (["unavailable"] * 3, 20.0, 4, False),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_two_handlers_of_one_capture_capture_it_once(engine, variant):
    script, tick_s, every, final_at_once = VARIANTS[variant]
    schedules = _schedules(2, _database(engine), every)
    for schedule, payment in zip(
        schedules, await authorized(engine, len(schedules), AMOUNT), strict=True
    ):
        run = await run_schedule(engine, schedule, payment, script=script, workers=2, tick_s=tick_s)
        await check(engine, run, final_at_once=final_at_once)


@pytest.mark.parametrize("tick_s", [0.0, 20.0], ids=["no-expiry", "zombies"])
async def test_three_handlers_of_one_capture_capture_it_once(engine, tick_s):
    count = 20 if _database(engine) == "sqlite" else 6
    schedules = list(random_schedules(3, SCHEDULE_LENGTH * 2, count, seed=20261209))
    for schedule, payment in zip(schedules, await authorized(engine, count, AMOUNT), strict=True):
        run = await run_schedule(
            engine, schedule, payment, script=["unavailable"], workers=3, tick_s=tick_s
        )
        await check(engine, run, final_at_once=True)


@pytest.mark.parametrize("variant", ["503-once-zombies", "timeout-then-known-zombies"])
async def test_a_capture_handler_and_the_reconciler_capture_once(engine, variant):
    script, tick_s, _every, _final = VARIANTS[variant]
    schedules = _schedules(2, _database(engine), every=4)
    for schedule, payment in zip(
        schedules, await authorized(engine, len(schedules), AMOUNT), strict=True
    ):
        run = await run_schedule(
            engine, schedule, payment, script=script, workers=1, tick_s=tick_s, reconciler=True
        )
        # The reconciler may find nothing capturing yet, or the handler's claim alive;
        # whichever way, the invariants hold once both are done.
        await check(engine, run, final_at_once=False)
        assert run.results[0] in set(Outcome), run.context


async def test_a_capture_taken_over_stays_capturing_while_a_former_call_may_capture(engine):
    """The schedule that found it: worker 0's call is on its way when worker 1 takes the
    capture over and hears 503 three times. Moving the payment back to authorized then
    would deny the capture that worker 0's call makes next."""
    (payment,) = await authorized(engine, 1, AMOUNT)
    run = await run_schedule(
        engine,
        # Worker 1: its claim, the renewal before its question, the question, then a
        # renewal, a send and its 503 three times.
        (0, *[1] * 12),
        payment,
        script=["unavailable"] * 3,
        workers=2,
        tick_s=20.0,
    )
    assert run.results == [Outcome.REPLAYED, Outcome.PENDING], run.context
    assert run.provider.captures_made != [], run.context
    assert await _status(engine, run) is PaymentStatus.CAPTURING, run.context
    await check(engine, run, final_at_once=False)
    assert await _status(engine, run) is PaymentStatus.SUCCEEDED, run.context


async def _status(engine, run: Run) -> PaymentStatus:
    async with engine.connect() as conn:
        status = (
            await conn.execute(select(payments.c.status).where(payments.c.id == run.payment_id))
        ).scalar_one()
    return PaymentStatus(status)
