"""An operator's settlement racing a reconciler pass and a redelivered command, on SQLite
and PostgreSQL, under deterministic schedules (tests/support/interleaving.py).

The workers: ``paygate reconcile settle --failed`` (PaymentSettlement), a reconciler pass,
and a redelivery of the payment's command, each over its own store, stopping before every
store write and while the provider's status query is in flight. The payment is withheld
(past its provider's window, the provider silent about its key). With ``tick_s`` the clock
jumps at every step, so claims expire mid-flight and a worker resumes after another took
the payment over.

What makes it hold is the claim, not timing: the settlement asks and records only under
the payment's claim, taken as the reconciler and a redelivery take it, and its recording is
written only while the claim is still its own. After every schedule: no charge was sent
again; the settlement either failed the payment (and it is failed, ``settled_by_operator``)
or was refused with ``not_withheld`` (and the payment is still pending, its attempt open);
nobody is left holding the claim; without expiry, never two status queries at once.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest
from sqlalchemy import select

from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.payment_reconciler import PaymentReconciler
from consumer.payment_settlement import PaymentSettlement
from domain.errors import ErrorCode, PaygateError
from domain.operator_settlement import Settled
from domain.payments import CreatePayment
from domain.status import PaymentStatus
from persistence.payment_store import PaymentStore
from persistence.stray_store import StrayStore
from persistence.tables import payments, provider_attempts
from providers.charge_only import ChargeOnlyProvider
from providers.errors import ProviderTimeoutError
from providers.port import ChargeOutcome, ChargeRequest
from providers.registry import Providers
from providers.routing import Router
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import ACCOUNT_KEY, create_payment
from tests.support.checkpointed_store import PAYMENT_WRITES, checkpointed
from tests.support.clock import Clock
from tests.support.interleaving import Interleaving, bounded_schedules

pytestmark = pytest.mark.integration

EVENTS = PaymentEvents(PaymentMessages.bundled(), "payments.results")
LEASE = timedelta(seconds=30)
SCHEDULE_LENGTH = 10
REASON = "dashboard: no charge under the key"

CheckpointedPayments = checkpointed(PaymentStore, PAYMENT_WRITES, lease=LEASE, name="payments")


class SilentAcquirer(ChargeOnlyProvider):
    """Keys honoured 24 hours; every charge times out, and its status query finds nothing.
    Stops at a checkpoint while a status query is in flight, and counts how many are."""

    def __init__(self, interleaving: Interleaving | None = None) -> None:
        super().__init__()
        self._il = interleaving
        self.charges: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0

    @property
    def name(self) -> str:
        return "silent"

    @property
    def idempotency_window(self) -> timedelta | None:
        return timedelta(hours=24)

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        self.charges.append(request.attempt_key)
        raise ProviderTimeoutError(self.name, "no answer in time")

    async def charge_status(self, attempt_key: str) -> ChargeOutcome | None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self._il is not None:
                await self._il.checkpoint("provider.charge_status")
            return None
        finally:
            self.in_flight -= 1


def handler(store: PaymentStore, provider: SilentAcquirer, clock: Clock) -> PaymentCommandHandler:
    return PaymentCommandHandler(
        store=store,
        providers=Providers.of(provider),
        router=Router.catch_all(provider.name),
        events=EVENTS,
        account_key=ACCOUNT_KEY,
        metrics=Metrics(),
        clock=clock,
    )


async def withheld_payments(engine, count: int) -> list[CreatePayment]:
    """``count`` payments begun two days ago whose charge timed out: withheld now."""
    clock = Clock()
    clock.now -= timedelta(days=2)
    begin = handler(PaymentStore(engine, clock), SilentAcquirer(), clock)
    commands = [create_payment() for _ in range(count)]
    for command in commands:
        assert await begin.handle(command) is Outcome.PENDING
    return commands


async def run_schedule(engine, schedule, command: CreatePayment, tick_s: float):
    clock = Clock()

    def tick() -> None:
        clock.now += timedelta(seconds=tick_s)

    interleaving = Interleaving(schedule, on_step=tick)
    provider = SilentAcquirer(interleaving)
    pid = command.payment_request_id

    settling = CheckpointedPayments(engine, clock, interleaving)
    settlement = PaymentSettlement(
        store=settling,
        providers=Providers.of(provider),
        events=EVENTS,
        strays=StrayStore(engine, settling.writes, clock),
        clock=clock,
    )
    reconciling = CheckpointedPayments(engine, clock, interleaving)
    # The pass sees this run's payment only: the earlier runs' (still withheld where the
    # settlement was refused) are left alone, so every schedule is about one payment.
    everything = reconciling.in_doubt

    async def this_payment_in_doubt(started_before, limit):
        return [
            d
            for d in await everything(started_before, limit)
            if d.payment.payment_request_id == pid
        ]

    reconciling.in_doubt = this_payment_in_doubt  # type: ignore[method-assign]
    reconciler = PaymentReconciler(
        store=reconciling,
        handler=handler(reconciling, provider, clock),
        metrics=Metrics(),
        min_age=timedelta(0),
        clock=clock,
    )
    redelivery = handler(CheckpointedPayments(engine, clock, interleaving), provider, clock)

    async def a_pass() -> object:
        await interleaving.checkpoint("reconciler.pass")
        return await reconciler.run_once()

    work: list[Callable[[], Awaitable[object]]] = [
        functools.partial(settlement.settle, pid, fail_reason=REASON),
        a_pass,
        functools.partial(redelivery.handle, command),
    ]
    results = await interleaving.run(work)
    return results, provider, f"schedule {list(schedule)}; trace {interleaving.trace}"


async def check(engine, command: CreatePayment, results, provider, context, *, tick_s):
    settled, *others = results
    assert not any(isinstance(r, BaseException) for r in others), f"{others}; {context}"
    assert provider.charges == [], context  # never sent again
    if tick_s == 0:
        assert provider.most_in_flight <= 1, context
    pid = command.payment_request_id
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(payments.c.status, payments.c.error_code, payments.c.claim_token).where(
                    payments.c.id == pid
                )
            )
        ).one()
        attempt_open = (
            await conn.execute(
                select(provider_attempts.c.finished_at).where(provider_attempts.c.payment_id == pid)
            )
        ).scalar_one() is None
    assert row.claim_token is None, context
    if isinstance(settled, Settled):
        assert settled.action == "failed_by_operator", context
        assert PaymentStatus(row.status) is PaymentStatus.FAILED, context
        assert row.error_code == ErrorCode.SETTLED_BY_OPERATOR.value, context
        assert not attempt_open, context
    else:
        assert isinstance(settled, PaygateError), f"{settled}; {context}"
        assert settled.code is ErrorCode.NOT_WITHHELD, f"{settled}; {context}"
        assert PaymentStatus(row.status) is PaymentStatus.PENDING, context
        assert attempt_open, context


@pytest.mark.parametrize("tick_s", [0.0, 20.0], ids=["no-expiry", "zombies"])
async def test_a_settlement_a_reconciler_pass_and_a_redelivery_never_act_at_once(engine, tick_s):
    every = 8 if engine.dialect.name == "sqlite" else 40
    schedules = list(bounded_schedules(3, SCHEDULE_LENGTH, switches=2))[::every]
    commands = await withheld_payments(engine, len(schedules))
    outcomes = set()
    for schedule, command in zip(schedules, commands, strict=True):
        results, provider, context = await run_schedule(engine, schedule, command, tick_s)
        await check(engine, command, results, provider, context, tick_s=tick_s)
        outcomes.add(type(results[0]).__name__)
    # The sample covers both ends: settled first, and refused while another held it.
    assert outcomes == {"Settled", "PaygateError"}
