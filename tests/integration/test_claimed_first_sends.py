"""A first send, and a question then a re-send, go out only while the claim is the caller's,
on SQLite and PostgreSQL.

A first charge (or refund) relies on the claim written with its row just before it, and a
re-send after a question on the claim written before the question: no renewal in between.
But the first send can wait at a full call gate (providers.call_gate) for longer than the
lease, and a question can last up to the provider timeout; meanwhile another worker (another
process) may take the row over and call the provider, and the first then calls too: two
workers calling the provider for one payment or refund at once. Here the lease is short and
runs out for real while the first worker waits (its place at the gate held by another call
of its process, or its question unanswered); a second worker takes over and sends; then the
first must not call the provider.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from consumer.capture_handler import CaptureCommandHandler
from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.refund_events import RefundEvents
from consumer.refund_handler import RefundCommandHandler
from domain.captures import CapturePayment
from domain.clock import utc_now
from domain.money import Money
from domain.refunds import RefundPayment
from domain.retry import RetryPolicy
from persistence.capture_store import CaptureStore
from persistence.group_commit import GroupCommit
from persistence.payment_store import PaymentStore
from persistence.refund_store import RefundStore
from providers.call_gate import GatedProvider, a_place_at
from providers.errors import ProviderTimeoutError
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
from tests.integration.test_claim_renewal_at_the_gate import CountedGate
from tests.integration.test_refund_ownership import paid
from tests.support.authorized_payments import authorized
from tests.support.builders import ACCOUNT_KEY, create_payment, unique
from tests.support.scripted_provider import ScriptedProvider

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()
# Short, and run out for real (the wall clock that decides takeovers and the monotonic
# clock that decides freshness both move only with time): every wait below is a lower
# bound, so the order of events is fixed whatever the machine's speed.
LEASE = timedelta(seconds=0.3)
RETRIES = RetryPolicy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.001)


class GateHolder:
    """Another call of the first worker's process, holding the gate's one place until
    ``free`` is set."""

    def __init__(self, provider: PaymentProvider) -> None:
        self._provider = provider
        self._placed = asyncio.Event()
        self.free = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def take(self) -> None:
        self.task = asyncio.create_task(self._hold())
        await self._placed.wait()

    async def _hold(self) -> None:
        async with a_place_at(self._provider):
            self._placed.set()
            await self.free.wait()

    async def let_go(self) -> None:
        self.free.set()
        assert self.task is not None
        await self.task


async def _lease_runs_out() -> None:
    await asyncio.sleep(2 * LEASE.total_seconds())


def _payment_handler(engine, provider: ScriptedProvider, providers: Providers):
    return PaymentCommandHandler(
        store=PaymentStore(engine, utc_now, claim_lease=LEASE),
        providers=providers,
        router=Router.catch_all(provider.name),
        events=PaymentEvents(MESSAGES, "payments.results"),
        account_key=ACCOUNT_KEY,
        metrics=Metrics(),
        retry_policy=RETRIES,
    )


def _refund_handler(engine, providers: Providers) -> RefundCommandHandler:
    return RefundCommandHandler(
        store=RefundStore(engine, GroupCommit(engine), utc_now, claim_lease=LEASE),
        providers=providers,
        events=RefundEvents(MESSAGES, "payments.results"),
        metrics=Metrics(),
        retry_policy=RETRIES,
    )


async def _refund_command(engine) -> RefundPayment:
    (payment,) = await paid(engine, 1)
    return RefundPayment.create(
        idempotency_key=unique("refund"),
        payment_request_id=payment.payment_id,
        order_id=payment.order_id,
        amount=Money(4_000, "EUR"),
        reason="requested_by_customer",
        requested_at=datetime.now(UTC),
    )


async def test_a_first_charge_that_waited_at_the_gate_is_sent_only_by_its_holder(engine):
    """The first worker begins the payment (its claim written with it) and goes to charge;
    the gate's one place is held by another call of its process for longer than the lease.
    A second worker, handling the command redelivered, takes the payment over, finds no
    charge at the provider and sends the key. Before, the first charged on the claim written
    before its wait once it had its place: two workers charging one payment. Now it renews
    the claim once it has its place (the confirmation is no longer fresh), finds it gone,
    and sends nothing."""
    provider = ScriptedProvider("sandbox")
    provider.script(
        "charge",
        ChargeOutcome(ChargeStatus.SUCCEEDED, "ch_second_worker"),
        ChargeOutcome(ChargeStatus.SUCCEEDED, "ch_first_worker"),  # not expected
    )
    provider.script("charge_status", None)
    gate = CountedGate(1)
    gated = GatedProvider(provider, gate)
    holder = GateHolder(gated)
    await holder.take()

    command = create_payment(amount=Money(3_000, "EUR"))
    first = asyncio.create_task(
        _payment_handler(engine, provider, Providers.of(gated)).handle(command)
    )
    await gate.waited(1).wait()  # the first worker's charge, waiting for the place
    await _lease_runs_out()

    redelivered = dataclasses.replace(command)
    second = await _payment_handler(engine, provider, Providers.of(provider)).handle(redelivered)
    assert second is Outcome.SUCCEEDED
    await holder.let_go()
    first_outcome = await first

    # The second worker's question and charge; nothing from the first after its wait.
    assert provider.called("charge") == provider.called("charge_status")
    assert len(provider.called("charge")) == 1
    assert provider.unanswered == {"charge": 1}
    assert first_outcome is Outcome.OWNED_ELSEWHERE


async def test_a_first_refund_call_that_waited_at_the_gate_is_sent_only_by_its_holder(engine):
    """The first worker begins the refund (its claim written with it, the amount reserved)
    and goes to send it; the gate's one place is held for longer than the lease. A second
    worker takes the refund over, finds none at the provider and sends it. Before, the first
    sent it too once it had its place; now it renews first, finds the claim gone, and sends
    nothing."""
    command = await _refund_command(engine)
    provider = ScriptedProvider("sandbox")
    provider.script(
        "refund",
        RefundOutcome(ProviderRefundStatus.SUCCEEDED, "re_second_worker"),
        RefundOutcome(ProviderRefundStatus.SUCCEEDED, "re_first_worker"),  # not expected
    )
    provider.script("refund_status", None)
    gate = CountedGate(1)
    gated = GatedProvider(provider, gate)
    holder = GateHolder(gated)
    await holder.take()

    first = asyncio.create_task(_refund_handler(engine, Providers.of(gated)).handle(command))
    await gate.waited(1).wait()  # the first worker's refund, waiting for the place
    await _lease_runs_out()

    second = await _refund_handler(engine, Providers.of(provider)).handle(
        dataclasses.replace(command)
    )
    assert second is Outcome.SUCCEEDED
    await holder.let_go()
    first_outcome = await first

    assert provider.called("refund") == [command.refund_id]  # the second worker's only
    assert provider.unanswered == {"refund": 1}
    assert first_outcome is Outcome.OWNED_ELSEWHERE


async def test_an_in_doubt_refund_asked_about_then_re_sent_only_by_its_holder(engine):
    """A refund's first call timed out (pending). Redelivered, the first worker claims it
    and asks the provider about it; the answer (none) takes longer than the lease. A second
    worker takes the refund over, asks, and sends it. Before, the first then re-sent it on
    the claim written before its question: two workers sending one refund. Now the question
    spent that confirmation, the re-send renews, finds the claim gone, and sends nothing."""
    command = await _refund_command(engine)
    provider = ScriptedProvider("sandbox")
    asking = asyncio.Event()
    answer = asyncio.Event()

    async def slow_no_record(_request: object) -> None:
        asking.set()
        await answer.wait()

    provider.script(
        "refund",
        ProviderTimeoutError(provider.name, "no answer in time"),
        RefundOutcome(ProviderRefundStatus.SUCCEEDED, "re_second_worker"),
        RefundOutcome(ProviderRefundStatus.SUCCEEDED, "re_first_worker"),  # not expected
    )
    provider.script("refund_status", slow_no_record, None)
    providers = Providers.of(provider).gated(1)
    assert await _refund_handler(engine, providers).handle(command) is Outcome.PENDING

    first = asyncio.create_task(
        _refund_handler(engine, providers).handle(dataclasses.replace(command))
    )
    await asking.wait()  # the first worker's question, unanswered yet
    await _lease_runs_out()

    second = await _refund_handler(engine, Providers.of(provider)).handle(
        dataclasses.replace(command)
    )
    assert second is Outcome.SUCCEEDED
    answer.set()
    first_outcome = await first

    # The call that timed out, then the second worker's; nothing from the first after its
    # question.
    assert provider.called("refund") == [command.refund_id] * 2
    assert provider.unanswered == {"refund": 1}
    assert first_outcome is Outcome.OWNED_ELSEWHERE


async def test_an_in_doubt_capture_asked_about_then_re_sent_only_by_its_holder(engine):
    """A capture's first call timed out (in flight). Redelivered, the first worker claims the
    payment and reads the charge; the answer (still authorized) takes longer than the lease.
    A second worker takes the capture over, reads the charge and captures. Before, the first
    then re-sent the capture on the claim written before its question; now the re-send
    renews, finds the claim gone, and sends nothing."""
    (payment,) = await authorized(engine, 1, Money(10_000, "EUR"))
    provider = ScriptedProvider("sandbox")
    asking = asyncio.Event()
    answer = asyncio.Event()

    async def slow_still_held(reference: str) -> ChargeOutcome:
        asking.set()
        await answer.wait()
        return ChargeOutcome(ChargeStatus.AUTHORIZED, reference)

    reference = payment.charge_reference
    provider.script(
        "capture",
        ProviderTimeoutError(provider.name, "no answer in time"),
        ChargeOutcome(ChargeStatus.SUCCEEDED, reference),
        ChargeOutcome(ChargeStatus.SUCCEEDED, reference),  # not expected
    )
    provider.script(
        "charge_by_reference", slow_still_held, ChargeOutcome(ChargeStatus.AUTHORIZED, reference)
    )

    def handler(providers: Providers) -> CaptureCommandHandler:
        return CaptureCommandHandler(
            store=CaptureStore(engine, GroupCommit(engine), utc_now, claim_lease=LEASE),
            providers=providers,
            events=PaymentEvents(MESSAGES, "payments.results"),
            metrics=Metrics(),
            retry_policy=RETRIES,
        )

    command = CapturePayment(payment.payment_id, payment.order_id, datetime.now(UTC))
    providers = Providers.of(provider).gated(1)
    assert await handler(providers).handle(command) is Outcome.PENDING

    first = asyncio.create_task(handler(providers).handle(dataclasses.replace(command)))
    await asking.wait()  # the first worker's read of the charge, unanswered yet
    await _lease_runs_out()

    second = await handler(Providers.of(provider)).handle(dataclasses.replace(command))
    assert second is Outcome.SUCCEEDED
    answer.set()
    first_outcome = await first

    # The call that timed out, then the second worker's; nothing from the first after its
    # question.
    assert len(provider.called("capture")) == 2
    assert provider.unanswered == {"capture": 1}
    assert first_outcome is Outcome.OWNED_ELSEWHERE
