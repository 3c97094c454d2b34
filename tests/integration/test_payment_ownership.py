"""One owner per provider attempt: two and three workers on one payment, interleaved at
every await point that matters, on SQLite and PostgreSQL.

The workers are duplicate handlers of one command (a redelivery, a copy sent without a
Kafka key, a zombie consumer) and the reconciler. Each stops before every store write, when
its provider call is sent and when the answer is back; a schedule decides who runs next
(see tests/support/interleaving.py). Schedules are enumerated with up to two preemptions;
with ``tick_s`` the clock jumps at every step, so claims expire mid-flight and a worker
resumes after another took its payment over (the zombie case).

After every schedule: at most one attempt key charged at the provider, the payment final,
succeeded exactly when a charge exists, no attempt left open, and no worker raised.
"""

from __future__ import annotations

import functools
import random
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta

import pytest
from sqlalchemy import select

from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.payment_reconciler import PaymentReconciler
from domain.retry import RetryPolicy
from domain.status import PaymentStatus
from persistence.payment_begin import Started
from persistence.payment_store import PaymentStore
from persistence.tables import payments, provider_attempts
from providers.charge_only import ChargeOnlyProvider
from providers.errors import ProviderUnavailableError
from providers.port import ChargeOutcome, ChargeRequest, ChargeStatus
from providers.registry import Providers
from providers.routing import Router
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import create_payment
from tests.support.checkpointed_store import PAYMENT_WRITES, checkpointed
from tests.support.clock import Clock
from tests.support.interleaving import Interleaving, bounded_schedules

pytestmark = pytest.mark.integration

ACCOUNT_KEY = b"test-fingerprint-key"
EVENTS = PaymentEvents(PaymentMessages.bundled(), "payments.results")
LEASE = timedelta(seconds=30)
SCHEDULE_LENGTH = 12


class ScriptedProvider(ChargeOnlyProvider):
    """Answers calls in order from ``script`` ("unavailable": certainly not charged, a 503),
    then charges; idempotent by attempt key, as real providers are. Stops at checkpoints."""

    def __init__(self, interleaving: Interleaving, script: Iterable[str]) -> None:
        super().__init__()
        self._il = interleaving
        self._script = list(script)
        self.calls: list[str] = []

    @property
    def name(self) -> str:
        return "sandbox"

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        await self._il.checkpoint("provider.charge sent")
        self.calls.append(request.attempt_key)
        if self._script and self._script.pop(0) == "unavailable":
            outcome: ChargeOutcome | None = None
        else:
            outcome = self.outcomes.get(request.attempt_key) or ChargeOutcome(
                ChargeStatus.SUCCEEDED, f"ch_{uuid.uuid4().hex[:12]}"
            )
            self.outcomes[request.attempt_key] = outcome
        await self._il.checkpoint("provider.charge answered")
        if outcome is None:
            raise ProviderUnavailableError("sandbox", "503 before processing")
        return outcome

    async def charge_status(self, attempt_key: str) -> ChargeOutcome | None:
        await self._il.checkpoint("provider.status")
        return self.outcomes.get(attempt_key)


CheckpointedStore = checkpointed(PaymentStore, PAYMENT_WRITES, lease=LEASE)


async def run_schedule(engine, schedule, *, script, workers, tick_s=0.0, reconciler=False):
    """Run ``workers`` duplicate handlers of one command (plus the reconciler if asked)
    under ``schedule``; return the command, the provider and the workers' results."""
    clock = Clock()

    def tick() -> None:
        clock.now += timedelta(seconds=tick_s)

    interleaving = Interleaving(schedule, on_step=tick)
    provider = ScriptedProvider(interleaving, script)
    command = create_payment()

    def handler(store):
        return PaymentCommandHandler(
            store=store,
            providers=Providers.of(provider),
            router=Router.catch_all(provider.name),
            events=EVENTS,
            account_key=ACCOUNT_KEY,
            metrics=Metrics(),
            retry_policy=RetryPolicy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.001),
            clock=clock,
        )

    # A store each, as separate consumer processes have.
    handlers = [handler(CheckpointedStore(engine, clock, interleaving)) for _ in range(workers)]
    work: list[Callable[[], Awaitable[object]]] = [
        functools.partial(h.handle, command) for h in handlers
    ]
    if reconciler:
        store = CheckpointedStore(engine, clock, interleaving)
        rec = PaymentReconciler(
            store=store,
            handler=handler(store),
            metrics=Metrics(),
            min_age=timedelta(0),
            clock=clock,
        )

        async def reconcile() -> object:
            # When the pass starts decides what it finds in doubt (its cut-off is read
            # then): a checkpoint, so schedules put it anywhere among the handler's steps.
            await interleaving.checkpoint("reconciler.pass")
            return await rec.run_once()

        work.append(reconcile)
    results = await interleaving.run(work)
    # What no worker may leave behind: the payment is finished by whoever held it last.
    # (A worker that found it owned elsewhere left it to that owner.)
    return command, provider, results, interleaving


async def assert_one_owner_held(engine, command, provider, results, interleaving):
    context = f"schedule trace: {interleaving.trace}"
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == [], context
    pid = command.payment_request_id
    charged_keys = [key for key in provider.outcomes if key.startswith(pid)]
    assert len(charged_keys) <= 1, f"double charge {charged_keys}; {context}"
    async with engine.connect() as conn:
        status = PaymentStatus(
            (await conn.execute(select(payments.c.status).where(payments.c.id == pid))).scalar_one()
        )
        attempts = (
            await conn.execute(
                select(
                    provider_attempts.c.attempt_key,
                    provider_attempts.c.status,
                    provider_attempts.c.finished_at,
                ).where(provider_attempts.c.payment_id == pid)
            )
        ).all()
    assert status.is_final, f"payment left {status}; {context}"
    assert (status is PaymentStatus.SUCCEEDED) == (len(charged_keys) == 1), context
    assert [a.attempt_key for a in attempts if a.finished_at is None] == [], context
    succeeded = [a.attempt_key for a in attempts if a.status == "succeeded"]
    assert succeeded == charged_keys, context


def _schedules(workers: int, database: str, every: int = 1):
    """Every schedule with up to two preemptions (``every``: a spread sample of them, for
    variations of a scenario whose full enumeration runs elsewhere). PostgreSQL runs a
    spread sample too: the same code paths, against the other database's locking."""
    schedules = list(bounded_schedules(workers, SCHEDULE_LENGTH, switches=2))
    return schedules[:: every if database == "sqlite" else every * 6]


def _database(engine) -> str:
    return engine.dialect.name


@pytest.mark.parametrize(
    ("script", "tick_s", "every"),
    [
        (["unavailable"], 20.0, 1),
        (["unavailable"], 0.0, 3),
        (["unavailable", "unavailable"], 20.0, 3),
        ([], 20.0, 3),
    ],
    ids=["503-once-zombies", "503-once", "503-twice-zombies", "no-failure-zombies"],
)
async def test_two_handlers_of_one_payment_charge_it_once(engine, script, tick_s, every):
    runs = 0
    for schedule in _schedules(2, _database(engine), every):
        outcome = await run_schedule(engine, schedule, script=script, workers=2, tick_s=tick_s)
        await assert_one_owner_held(engine, *outcome)
        runs += 1
    assert runs > 0


@pytest.mark.parametrize("tick_s", [0.0, 20.0], ids=["no-expiry", "zombies"])
async def test_three_handlers_of_one_payment_charge_it_once(engine, tick_s):
    rng = random.Random(20261206)  # seeded: a failure names a reproducible schedule
    count = 30 if _database(engine) == "sqlite" else 10
    for _ in range(count):
        schedule = [rng.randrange(3) for _ in range(SCHEDULE_LENGTH * 2)]
        outcome = await run_schedule(
            engine, schedule, script=["unavailable"], workers=3, tick_s=tick_s
        )
        await assert_one_owner_held(engine, *outcome)


async def test_a_handler_and_the_reconciler_charge_once(engine):
    examined = 0
    for schedule in _schedules(2, _database(engine), every=2):
        outcome = await run_schedule(
            engine, schedule, script=["unavailable"], workers=1, tick_s=20.0, reconciler=True
        )
        _command, _provider, results, interleaving = outcome
        # The reconciler may have found nothing in doubt yet, or the handler's claim alive;
        # whichever way, the invariants hold once both are done.
        await assert_one_owner_held(engine, *outcome)
        assert results[0] in set(Outcome), interleaving.trace
        examined += results[1].checked
    # Some schedules must have given the reconciler something to take over.
    assert examined > 0


async def test_a_worker_that_lost_its_claim_records_its_charge_as_stray(engine):
    """The residual case claims cannot exclude: the new owner ran out of retries and failed
    the payment, and the former owner's call, still in flight, charged after all. The
    charge is recorded on its attempt (for the stray-charge sweep), never dropped."""
    clock = Clock()
    store = PaymentStore(engine, clock, claim_lease=LEASE)
    command = create_payment()
    begun = await store.begin(
        command,
        provider="sandbox",
        account_key=ACCOUNT_KEY,
        refusal_event=lambda *_: pytest.fail("not refused"),
    )
    assert isinstance(begun, Started)
    pid = command.payment_request_id
    clock.now += LEASE * 2
    taken = await store.claim(pid)
    assert taken is not None
    # Taken over: no failover to a new key (the first owner may have a call in flight).
    assert await store.next_attempt(pid, begun.attempt_key, "b", claim=taken.claim.token) is None
    payment = await _payment(store, pid)
    assert await store.finish(
        pid,
        begun.attempt_key,
        claim=taken.claim.token,
        status=PaymentStatus.FAILED,
        attempt_status="failed",
        provider_reference=None,
        error=None,
        event=EVENTS.of_payment(payment),
    )
    # The former owner learns that a1 was charged after all: not applied, but recorded.
    applied = await store.finish(
        pid,
        begun.attempt_key,
        claim=begun.claim.token,
        status=PaymentStatus.SUCCEEDED,
        attempt_status="succeeded",
        provider_reference="ch_late",
        error=None,
        event=EVENTS.of_payment(await _payment(store, pid)),
    )
    assert applied is False
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(
                    provider_attempts.c.attempt_key,
                    provider_attempts.c.status,
                    provider_attempts.c.provider_reference,
                ).where(provider_attempts.c.payment_id == pid)
            )
        ).all()
    assert [tuple(r) for r in rows] == [(f"{pid}-a1", "succeeded", "ch_late")]
    assert (await _payment(store, pid)).status is PaymentStatus.FAILED


async def _payment(store, pid):
    payment = await store.get_payment(pid)
    assert payment is not None
    return payment
