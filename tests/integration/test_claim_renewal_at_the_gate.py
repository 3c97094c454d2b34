"""A holder of a claim renews it only once its call has its place at the provider, on SQLite
and PostgreSQL.

The consumer's calls share a gate (``PAYGATE_MAX_PROVIDER_CALLS``, providers.call_gate),
and a wait there, behind calls each up to the provider timeout, is bounded by no lease. A
worker that renewed its claim and then waited at a full gate for longer than the lease lost
the claim in the wait: another worker (another process) took the payment or refund over and
called the provider, and the first then called too, two workers calling the provider for
one payment at once. Here the gate's one place is held by another call of the first
worker's process while the lease runs out and a second worker takes over and calls; once
the place is free, the first must not call the provider.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest

from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.refund_events import RefundEvents
from consumer.refund_handler import RefundCommandHandler
from domain.money import Money
from domain.refunds import RefundPayment
from domain.retry import RetryPolicy
from persistence.group_commit import GroupCommit
from persistence.payment_store import PaymentStore
from persistence.refund_store import RefundStore
from providers.call_gate import GatedProvider, a_place_at
from providers.errors import ProviderTimeoutError, ProviderUnavailableError
from providers.port import (
    ChargeOutcome,
    ChargeStatus,
    PaymentProvider,
    ProviderRefundStatus,
    RefundOutcome,
)
from providers.registry import Providers
from providers.routing import Router
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.integration.test_refund_ownership import paid
from tests.support.builders import ACCOUNT_KEY, create_payment, unique
from tests.support.clock import Clock
from tests.support.scripted_provider import ScriptedProvider

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()
LEASE = timedelta(seconds=30)
RETRIES = RetryPolicy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.001)


class CountedGate(asyncio.Semaphore):
    """The process's provider-call gate; ``waited(n)`` is set once the n-th caller finds it
    full and waits for a place."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self._waits = 0
        self._waited: dict[int, asyncio.Event] = {}

    def waited(self, n: int) -> asyncio.Event:
        return self._waited.setdefault(n, asyncio.Event())

    async def acquire(self) -> Literal[True]:
        if self.locked():
            self._waits += 1
            self.waited(self._waits).set()
        return await super().acquire()


class Occupier:
    """Another call of the first worker's process, holding the gate's one place until
    ``free`` is set."""

    def __init__(self, provider: PaymentProvider) -> None:
        self._provider = provider
        self.free = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def queue_behind_this_call(self, gate: CountedGate) -> None:
        """Called inside a call holding the gate's place: the occupier waits for it, so it
        takes the place when that call ends, ahead of the caller's next call."""
        # Started inside the caller's place at the gate: a place of its own all the same
        # (providers.call_gate), taken once the caller's call ends.
        self.task = asyncio.create_task(self._hold())
        await gate.waited(1).wait()

    async def _hold(self) -> None:
        async with a_place_at(self._provider):
            await self.free.wait()


async def test_a_payment_re_sent_after_a_wait_at_the_gate_is_sent_only_by_its_holder(engine):
    """A payment whose first charge timed out is redelivered: the first worker claims it,
    asks its status (no record) and goes to re-send the key; the gate is full (the
    occupier took the place when the status answer came back) for longer than the lease.
    A second worker takes the payment over and re-sends. Before, the first had renewed its
    claim before it waited and charged again once it had its place: two workers charging
    one payment at once. Now it renews once it has the place, finds the claim gone and
    sends nothing."""
    clock = Clock()
    provider = ScriptedProvider("sandbox")
    gate = CountedGate(1)
    gated = GatedProvider(provider, gate)
    occupier = Occupier(gated)

    async def no_record_yet(_key: object) -> None:
        await occupier.queue_behind_this_call(gate)

    provider.script(
        "charge",
        ProviderTimeoutError(provider.name, "no answer in time"),
        ChargeOutcome(ChargeStatus.SUCCEEDED, "ch_second_worker"),
        ChargeOutcome(ChargeStatus.SUCCEEDED, "ch_first_worker"),  # not expected
    )
    provider.script("charge_status", no_record_yet, None)

    def handler(providers: Providers) -> PaymentCommandHandler:
        return PaymentCommandHandler(
            store=PaymentStore(engine, clock, claim_lease=LEASE),
            providers=providers,
            router=Router.catch_all(provider.name),
            events=PaymentEvents(MESSAGES, "payments.results"),
            account_key=ACCOUNT_KEY,
            metrics=Metrics(),
            retry_policy=RETRIES,
            clock=clock,
        )

    command = create_payment(amount=Money(3_000, "EUR"))
    assert await handler(Providers.of(provider)).handle(command) is Outcome.PENDING
    (key,) = provider.called("charge")

    first = asyncio.create_task(handler(Providers.of(gated)).handle(dataclasses.replace(command)))
    await gate.waited(2).wait()  # the occupier's wait, then the first worker's
    clock.now += LEASE + timedelta(seconds=1)

    second = await handler(Providers.of(provider)).handle(dataclasses.replace(command))
    assert second is Outcome.SUCCEEDED
    occupier.free.set()
    first_outcome = await first
    assert occupier.task is not None
    await occupier.task

    assert provider.called("charge") == [key, key]  # the first call, the second worker's
    assert provider.unanswered == {"charge": 1}
    assert first_outcome is Outcome.OWNED_ELSEWHERE


async def test_a_refund_re_sent_after_a_wait_at_the_gate_is_sent_only_by_its_holder(engine):
    """A refund's first call is refused with a 503 (certainly not refunded); while the
    first worker waits out the back-off, another call of its process takes the gate's one
    place, and holds it for longer than the lease. A second worker takes the refund over
    and sends it. Before, the first had renewed its claim after the back-off, before it
    waited at the gate, and sent the refund again once it had its place. Now it renews
    once it has the place, finds the claim gone and sends nothing."""
    (payment,) = await paid(engine, 1)
    clock = Clock()
    provider = ScriptedProvider("sandbox")
    gate = CountedGate(1)
    gated = GatedProvider(provider, gate)
    occupier = Occupier(gated)

    async def refused(_request: object) -> ProviderUnavailableError:
        await occupier.queue_behind_this_call(gate)
        return ProviderUnavailableError(provider.name, "503 before processing")

    provider.script(
        "refund",
        refused,
        RefundOutcome(ProviderRefundStatus.SUCCEEDED, "re_second_worker"),
        RefundOutcome(ProviderRefundStatus.SUCCEEDED, "re_first_worker"),  # not expected
    )
    provider.script("refund_status", None)
    writes = GroupCommit(engine)

    def handler(providers: Providers) -> RefundCommandHandler:
        return RefundCommandHandler(
            store=RefundStore(engine, writes, clock, claim_lease=LEASE),
            providers=providers,
            events=RefundEvents(MESSAGES, "payments.results"),
            metrics=Metrics(),
            retry_policy=RETRIES,
            clock=clock,
        )

    command = RefundPayment.create(
        idempotency_key=unique("refund"),
        payment_request_id=payment.payment_id,
        order_id=payment.order_id,
        amount=Money(4_000, "EUR"),
        reason="requested_by_customer",
        requested_at=datetime.now(UTC),
    )
    first = asyncio.create_task(handler(Providers.of(gated)).handle(command))
    await gate.waited(2).wait()  # the occupier's wait, then the first worker's re-send
    clock.now += LEASE + timedelta(seconds=1)

    second = await handler(Providers.of(provider)).handle(dataclasses.replace(command))
    assert second is Outcome.SUCCEEDED
    occupier.free.set()
    first_outcome = await first
    assert occupier.task is not None
    await occupier.task

    # The refused call, then the second worker's; nothing from the first after its wait.
    assert provider.called("refund") == [command.refund_id] * 2
    assert provider.unanswered == {"refund": 1}
    assert first_outcome is Outcome.OWNED_ELSEWHERE
