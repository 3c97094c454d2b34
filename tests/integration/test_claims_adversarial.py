"""Adversarial review of "one owner per provider attempt, refund and capture", on SQLite and
PostgreSQL.

Each test is an attack on the claims. Those under "holes" broke an invariant when they were
written (a refund or capture failed on a guess while its first call could still land, a
pending payment re-sent without retries, a late charge recorded nowhere, reconcilers starved
by rows they cannot settle, a claim kept after a second timeout); they state what must hold
and pass since the fixes. The others are attacks the claims withstood; they document the
defence.

The provider double (:class:`Acquirer`) is idempotent by key like real providers, refuses a
refund above what is left of the charge (as Stripe does), and can hold a call "in flight":
the caller sees a timeout, and the test lets the call land at the provider later, as a slow
network does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from consumer.capture_handler import CaptureCommandHandler
from consumer.capture_reconciler import CaptureReconciler
from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.payment_reconciler import PaymentReconciler
from consumer.refund_events import RefundEvents
from consumer.refund_handler import RefundCommandHandler
from consumer.refund_reconciler import RefundReconciler
from consumer.sealing import CommandSealer
from consumer.stray_charges import StraySweep
from domain.accounts import Account
from domain.captures import CapturePayment
from domain.errors import ErrorCode, PaygateError
from domain.money import Money
from domain.refunds import RefundPayment, RefundStatus
from domain.retry import RetryPolicy
from domain.status import PaymentStatus
from persistence.capture_store import CaptureStarted, CaptureStore
from persistence.payment_begin import Started
from persistence.payment_store import PaymentStore
from persistence.refund_store import RefundRefused, RefundStarted, RefundStore
from persistence.stray_store import StrayStore
from persistence.tables import payments, provider_attempts
from providers.errors import (
    ProviderTimeoutError,
    ProviderUnavailableError,
    UnsupportedOperationError,
)
from providers.port import (
    CancelRequest,
    CaptureRequest,
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
from tests.support.builders import create_payment, unexpected_refusal, unique
from tests.support.checkpointed_store import PAYMENT_WRITES, checkpointed
from tests.support.clock import Clock
from tests.support.interleaving import Interleaving, bounded_schedules

pytestmark = pytest.mark.integration

ACCOUNT_KEY = b"test-fingerprint-key"
MESSAGES = PaymentMessages.bundled()
EVENTS = PaymentEvents(MESSAGES, "payments.results")
REFUND_EVENTS = RefundEvents(MESSAGES, "payments.results")
LEASE = timedelta(seconds=30)
# Tiny back-offs: the handlers really sleep them (asyncio.sleep), never as synchronisation.
FAST = {"base_delay_s": 0.001, "max_delay_s": 0.001}
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


class Acquirer:
    """A provider double. Each operation answers from its script, then "ok":

    * ``"ok"``: done, idempotently by key (the same key gets the first answer again);
    * ``"unavailable"``: a 503 before processing (certainly not done);
    * ``"timeout"``: the request is in flight; the caller gets a timeout, and the request
      takes effect only when the test calls :meth:`land`;
    * ``"hang"``: the request is in flight and the call never returns (until cancelled);
    * ``"accepted"`` (refunds): accepted, to be settled later; it stays pending.
    """

    # Keys honoured for ever, unless a test sets a window.
    idempotency_window: timedelta | None = None
    # Its status answers show a charge at once, unless a test sets a lag.
    status_search_lag: timedelta = timedelta(0)
    refund_status_lag: timedelta = timedelta(0)

    def __init__(
        self,
        name: str = "sandbox",
        *,
        charge: tuple[str, ...] = (),
        capture: tuple[str, ...] = (),
        refund: tuple[str, ...] = (),
        interleaving: Interleaving | None = None,
    ) -> None:
        self._name = name
        self._scripts = {"charge": list(charge), "capture": list(capture), "refund": list(refund)}
        self._il = interleaving
        self.charges: dict[str, ChargeOutcome] = {}  # by attempt key
        self.amounts: dict[str, int] = {}  # by charge reference
        self.captured: set[str] = set()  # charge references
        self.refunds: dict[str, RefundOutcome] = {}  # by refund key
        self.refunded: dict[str, int] = {}  # by charge reference
        self.sent: list[tuple[str, str]] = []  # (operation, key) as they reached us
        self.in_flight: list[Callable[[], object]] = []
        self.hanging = asyncio.Event()
        self.status_down = False

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def _answer(self, operation: str, key: str, effect: Callable[[], object]) -> None:
        if self._il is not None:
            await self._il.checkpoint(f"{self._name}.{operation} sent")
        self.sent.append((operation, key))
        script = self._scripts[operation]
        answer = script.pop(0) if script else "ok"
        if answer == "unavailable":
            if self._il is not None:
                await self._il.checkpoint(f"{self._name}.{operation} answered")
            raise ProviderUnavailableError(self._name, "503 before processing")
        if answer == "timeout":
            self.in_flight.append(effect)
            raise ProviderTimeoutError(self._name, "no answer in time")
        if answer == "accepted":  # a refund the provider settles later (days, for some)
            self.refunds[key] = RefundOutcome(ProviderRefundStatus.PENDING, f"re_{key}")
            return
        if answer == "hang":
            self.in_flight.append(effect)
            self.hanging.set()
            await asyncio.Event().wait()
        assert answer == "ok", answer

    def land(self) -> None:
        """The requests that were in flight reach the provider now."""
        landing, self.in_flight = self.in_flight, []
        for effect in landing:
            effect()

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        await self._answer("charge", request.attempt_key, lambda: self._charge(request))
        outcome = self._charge(request)
        if self._il is not None:
            await self._il.checkpoint(f"{self._name}.charge answered")
        return outcome

    def _charge(self, request: ChargeRequest) -> ChargeOutcome:
        known = self.charges.get(request.attempt_key)
        if known is None:
            reference = f"ch_{self._name}_{uuid.uuid4().hex[:10]}"
            status = ChargeStatus.SUCCEEDED if request.capture else ChargeStatus.AUTHORIZED
            known = ChargeOutcome(status, reference)
            self.charges[request.attempt_key] = known
            self.amounts[reference] = request.amount.minor_units
            if request.capture:
                self.captured.add(reference)
        return self._now(known)

    def _now(self, known: ChargeOutcome) -> ChargeOutcome:
        if known.provider_reference in self.captured:
            return ChargeOutcome(ChargeStatus.SUCCEEDED, known.provider_reference)
        return known

    async def charge_status(self, attempt_key: str) -> ChargeOutcome | None:
        if self.status_down:
            raise ProviderUnavailableError(self._name, "status endpoint down")
        if self._il is not None:
            await self._il.checkpoint(f"{self._name}.status")
        known = self.charges.get(attempt_key)
        return None if known is None else self._now(known)

    async def close_charge(self, attempt_key: str) -> ChargeOutcome | None:
        raise UnsupportedOperationError(self.name, "no payer actions in this double")

    async def charge_by_reference(self, provider_reference: str) -> ChargeOutcome | None:
        for known in self.charges.values():
            if known.provider_reference == provider_reference:
                return self._now(known)
        return None

    async def capture(self, request: CaptureRequest) -> ChargeOutcome:
        await self._answer("capture", request.capture_key, lambda: self._capture(request))
        return self._capture(request)

    def _capture(self, request: CaptureRequest) -> ChargeOutcome:
        self.captured.add(request.charge_reference)
        return ChargeOutcome(ChargeStatus.SUCCEEDED, request.charge_reference)

    async def cancel(self, request: CancelRequest) -> ChargeOutcome:
        raise UnsupportedOperationError(self.name, "these schedules make no cancels")

    async def refund(self, request: RefundRequest) -> RefundOutcome:
        await self._answer("refund", request.refund_key, lambda: self._refund(request))
        return self._refund(request)

    def _refund(self, request: RefundRequest) -> RefundOutcome:
        known = self.refunds.get(request.refund_key)
        if known is not None:
            return known
        reference = request.charge_reference
        left = self.amounts.get(reference, 0) - self.refunded.get(reference, 0)
        if reference not in self.captured or request.amount.minor_units > left:
            known = RefundOutcome(
                ProviderRefundStatus.FAILED,
                None,
                PaygateError(ErrorCode.REFUND_EXCEEDS_CAPTURED, "more than is left to refund"),
            )
        else:
            self.refunded[reference] = self.refunded.get(reference, 0) + request.amount.minor_units
            known = RefundOutcome(ProviderRefundStatus.SUCCEEDED, f"re_{uuid.uuid4().hex[:10]}")
        self.refunds[request.refund_key] = known
        return known

    async def refund_status(self, refund_key: str, charge_reference: str) -> RefundOutcome | None:
        return self.refunds.get(refund_key)


def payment_handler(
    store: PaymentStore,
    clock: Clock,
    *acquirers: Acquirer,
    route: list[str] | None = None,
    attempts: int = 3,
) -> PaymentCommandHandler:
    names = route or [acquirers[0].name]
    return PaymentCommandHandler(
        store=store,
        providers=Providers.of(*acquirers),
        router=Router({"*": names}),
        events=EVENTS,
        account_key=ACCOUNT_KEY,
        metrics=Metrics(),
        retry_policy=RetryPolicy(max_attempts=attempts, **FAST),
        clock=clock,
    )


def refund_of(payment_id: str, order_id: str, amount: Money | None = None) -> RefundPayment:
    return RefundPayment.create(
        idempotency_key=unique("refund-key"),
        payment_request_id=payment_id,
        order_id=order_id,
        amount=amount,
        reason="requested_by_customer",
        requested_at=NOW,
    )


def capture_of(payment_id: str, order_id: str) -> CapturePayment:
    return CapturePayment.create(payment_request_id=payment_id, order_id=order_id, requested_at=NOW)


async def attempts_of(engine, payment_id: str):
    async with engine.connect() as conn:
        return (
            await conn.execute(
                select(
                    provider_attempts.c.attempt_key,
                    provider_attempts.c.provider,
                    provider_attempts.c.status,
                    provider_attempts.c.provider_reference,
                    provider_attempts.c.finished_at,
                    provider_attempts.c.sealed_request,
                )
                .where(provider_attempts.c.payment_id == payment_id)
                .order_by(provider_attempts.c.attempt_no)
            )
        ).all()


async def claim_of(engine, payment_id: str) -> str | None:
    async with engine.connect() as conn:
        token: str | None = (
            await conn.execute(select(payments.c.claim_token).where(payments.c.id == payment_id))
        ).scalar_one()
        return token


async def status_of(store: PaymentStore, payment_id: str) -> PaymentStatus:
    payment = await store.get_payment(payment_id)
    assert payment is not None
    return payment.status


async def begun(store: PaymentStore, command, provider: str = "sandbox") -> Started:
    result = await store.begin(
        command,
        provider=provider,
        account_key=ACCOUNT_KEY,
        refusal_event=unexpected_refusal,
        seal=CommandSealer(ACCOUNT_KEY).seal,
    )
    assert isinstance(result, Started)
    return result


async def finish(store: PaymentStore, pid: str, key: str, claim: str, status, attempt, ref):
    payment = await store.get_payment(pid)
    assert payment is not None
    return await store.finish(
        pid,
        key,
        claim=claim,
        status=status,
        attempt_status=attempt,
        provider_reference=ref,
        error=None,
        event=EVENTS.of_payment(payment),
    )


# --- holes ----------------------------------------------------------------------------------


async def test_a_timed_out_refund_is_never_failed_while_it_may_still_land(engine):
    clock = Clock()
    store = PaymentStore(engine, clock)
    refunds = RefundStore(engine, store.writes, clock)
    acquirer = Acquirer(refund=("timeout", "unavailable", "unavailable"))
    command = create_payment()
    assert await payment_handler(store, clock, acquirer).handle(command) is Outcome.SUCCEEDED
    pid = command.payment_request_id
    handler = RefundCommandHandler(
        store=refunds,
        providers=Providers.of(acquirer),
        events=REFUND_EVENTS,
        metrics=Metrics(),
        retry_policy=RetryPolicy(max_attempts=2, **FAST),
        clock=clock,
    )
    first = refund_of(pid, command.order_id)
    # The call times out: the refund stays pending, its amount reserved.
    assert await handler.handle(first) is Outcome.PENDING
    # The reconciler finds it: the provider has no record yet (the request is still on its
    # way), so it sends it again, same key, into a 503, twice: retries used up.
    clock.now += timedelta(seconds=1)
    reconciler = RefundReconciler(
        store=refunds, handler=handler, metrics=Metrics(), min_age=timedelta(0), clock=clock
    )
    assert await reconciler.run_once() == 1
    # The first request lands: the provider refunds the whole charge.
    acquirer.land()
    (reference,) = acquirer.refunded
    assert acquirer.refunded[reference] == command.amount.minor_units
    # A second refund of "what remains" is accepted and sent: paygate thinks nothing was
    # refunded. Only the provider's own cap stops it.
    second = refund_of(pid, command.order_id)
    await handler.handle(second)

    first_now = await refunds.get(first.refund_id)
    assert first_now is not None
    payment = await store.get_payment(pid)
    assert payment is not None
    # What must hold: paygate's books agree with the provider's, and paygate never sends a
    # refund of money already refunded.
    assert first_now.status is not RefundStatus.FAILED
    assert ("refund", second.refund_id) not in acquirer.sent
    assert payment.refunded_minor + payment.refund_reserved_minor >= acquirer.refunded[reference]


async def test_a_timed_out_capture_is_never_reverted_while_it_may_still_land(engine):
    clock = Clock()
    store = PaymentStore(engine, clock)
    captures = CaptureStore(engine, store.writes, clock)
    acquirer = Acquirer(capture=("timeout", "unavailable", "unavailable"))
    command = dataclasses.replace(create_payment(), capture=False)
    assert await payment_handler(store, clock, acquirer).handle(command) is Outcome.AUTHORIZED
    pid = command.payment_request_id
    handler = CaptureCommandHandler(
        store=captures,
        providers=Providers.of(acquirer),
        events=EVENTS,
        metrics=Metrics(),
        retry_policy=RetryPolicy(max_attempts=2, **FAST),
        clock=clock,
    )
    assert await handler.handle(capture_of(pid, command.order_id)) is Outcome.PENDING
    clock.now += timedelta(seconds=1)
    reconciler = CaptureReconciler(
        store=captures, handler=handler, metrics=Metrics(), min_age=timedelta(0), clock=clock
    )
    assert await reconciler.run_once() == 1
    acquirer.land()  # the first capture reaches the provider: the money is taken
    (charge,) = acquirer.charges.values()
    assert charge.provider_reference in acquirer.captured
    # What must hold: a payment whose money the provider took is not "authorized" (it is
    # succeeded, or still capturing for the capture reconciler to settle).
    assert await status_of(store, pid) in (PaymentStatus.SUCCEEDED, PaymentStatus.CAPTURING)


async def test_a_pending_payment_resent_into_a_503_is_retried_like_any_other(engine):
    clock = Clock()
    acquirer = Acquirer(charge=("timeout", "unavailable", "ok"))
    command = create_payment()
    first = payment_handler(PaymentStore(engine, clock), clock, acquirer, attempts=3)
    assert await first.handle(command) is Outcome.PENDING
    # The redelivered command: the provider has no record of a1 (the first call is still
    # on its way), so a1 is re-sent; it meets a 503. The policy allows 3 calls.
    store = PaymentStore(engine, clock)
    again = payment_handler(store, clock, acquirer, attempts=3)
    await again.handle(command)
    acquirer.land()
    pid = command.payment_request_id
    assert list(acquirer.charges) == [f"{pid}-a1"]  # the provider did charge (once)
    assert await status_of(store, pid) is PaymentStatus.SUCCEEDED


async def test_a_late_charge_reported_before_the_owner_fails_the_attempt_is_kept(engine):
    clock = Clock()
    store = PaymentStore(engine, clock, claim_lease=LEASE)
    command = create_payment()
    first = await begun(store, command)
    pid, key = command.payment_request_id, first.attempt_key
    clock.now += LEASE * 2
    taken = await store.claim(pid)
    assert taken is not None
    # The new owner's re-send met a 503 (before the former owner's call arrived). Then the
    # former owner's call charges, and it reports first...
    late = await finish(
        store, pid, key, first.claim.token, PaymentStatus.SUCCEEDED, "succeeded", "ch_late"
    )
    assert late is False
    # ... and the new owner, out of retries, records "certainly not charged".
    assert await finish(store, pid, key, taken.claim.token, PaymentStatus.FAILED, "failed", None)
    (attempt,) = await attempts_of(engine, pid)
    assert (attempt.status, attempt.provider_reference) == ("succeeded", "ch_late")


async def test_payments_the_reconciler_cannot_settle_do_not_starve_the_others(engine):
    clock = Clock()
    store = PaymentStore(engine, clock)
    down, up = Acquirer("down"), Acquirer("up")
    down.status_down = True
    older, newer = create_payment(), create_payment()
    for command, provider in ((older, "down"), (newer, "up")):
        started = await begun(store, command, provider)
        await store.release(command.payment_request_id, started.claim.token)  # its worker died
        clock.now += timedelta(seconds=1)
    handler = payment_handler(store, clock, down, up, route=["up"])
    reconciler = PaymentReconciler(
        store=store, handler=handler, metrics=Metrics(), min_age=timedelta(0), clock=clock
    )
    for _ in range(3):  # a page of one stands for a page of PAGE_SIZE unanswerable payments
        await reconciler.run_once(limit=1)
        clock.now += timedelta(seconds=1)
    assert await status_of(store, newer.payment_request_id) is PaymentStatus.SUCCEEDED


async def test_an_owner_that_times_out_again_gives_the_payment_back(engine):
    clock = Clock()
    acquirer = Acquirer(charge=("timeout", "timeout"))
    command = create_payment()
    first = payment_handler(PaymentStore(engine, clock), clock, acquirer)
    assert await first.handle(command) is Outcome.PENDING
    store = PaymentStore(engine, clock)
    outcome = await payment_handler(store, clock, acquirer).handle(command)
    pid = command.payment_request_id
    assert await status_of(store, pid) is PaymentStatus.PENDING
    assert outcome is Outcome.PENDING
    assert await claim_of(engine, pid) is None  # the reconciler may take it at once


async def test_refunds_the_provider_keeps_pending_do_not_starve_the_others(engine):
    clock = Clock()
    store = PaymentStore(engine, clock)
    refunds = RefundStore(engine, store.writes, clock)
    acquirer = Acquirer(refund=("accepted", "timeout"))
    command = create_payment()
    assert await payment_handler(store, clock, acquirer).handle(command) is Outcome.SUCCEEDED
    pid, eur = command.payment_request_id, command.amount.currency
    handler = RefundCommandHandler(
        store=refunds, providers=Providers.of(acquirer), events=REFUND_EVENTS, metrics=Metrics()
    )
    slow = refund_of(pid, command.order_id, Money(100, eur))
    assert await handler.handle(slow) is Outcome.PENDING  # settled by the provider in days
    clock.now += timedelta(seconds=1)
    lost = refund_of(pid, command.order_id, Money(100, eur))
    assert await handler.handle(lost) is Outcome.PENDING  # timed out ...
    acquirer.land()  # ... and was made all the same
    reconciler = RefundReconciler(
        store=refunds, handler=handler, metrics=Metrics(), min_age=timedelta(0), clock=clock
    )
    for _ in range(3):  # a page of one stands for a page of PAGE_SIZE slow refunds
        clock.now += timedelta(seconds=1)
        await reconciler.run_once(limit=1)
    settled = await refunds.get(lost.refund_id)
    assert settled is not None
    assert settled.status is RefundStatus.SUCCEEDED


# --- attacks that failed --------------------------------------------------------------------


async def test_after_a_takeover_nobody_opens_a_new_key_on_a_three_provider_route(engine):
    clock = Clock()
    p1 = Acquirer("p1", charge=("unavailable",))
    p2 = Acquirer("p2", charge=("hang", "unavailable", "ok"))
    p3 = Acquirer("p3")
    route = ["p1", "p2", "p3"]
    command = create_payment()
    store = PaymentStore(engine, clock, claim_lease=LEASE)
    first = payment_handler(store, clock, p1, p2, p3, route=route)
    # a1 at p1: 503, fail over to a2 at p2 (opened under the first worker's claim), which
    # hangs: the first worker becomes a zombie with a2 in flight.
    zombie = asyncio.create_task(first.handle(command))
    await p2.hanging.wait()
    clock.now += LEASE * 2
    again = payment_handler(
        PaymentStore(engine, clock, claim_lease=LEASE), clock, p1, p2, p3, route=route
    )
    # The redelivery takes a2 over: p2 has no record (the call is on its way), re-sends a2,
    # meets a 503. It must not fail over to p3 (a2's first call may still charge): it
    # retries a2 at p2.
    assert await again.handle(command) is Outcome.SUCCEEDED
    p2.land()
    zombie.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await zombie
    pid = command.payment_request_id
    assert [(a.attempt_key, a.provider, a.status) for a in await attempts_of(engine, pid)] == [
        (f"{pid}-a1", "p1", "failed"),
        (f"{pid}-a2", "p2", "succeeded"),
    ]
    assert p3.sent == []
    assert list(p2.charges) == [f"{pid}-a2"]
    assert p1.charges == {}
    assert await status_of(store, pid) is PaymentStatus.SUCCEEDED


async def test_neither_owner_may_fail_over_after_a_takeover(engine):
    clock = Clock()
    store = PaymentStore(engine, clock, claim_lease=LEASE)
    command = create_payment()
    first = await begun(store, command, "p1")
    pid = command.payment_request_id
    a2 = await store.next_attempt(pid, first.attempt_key, "p2", claim=first.claim.token)
    assert a2 == f"{pid}-a2"
    clock.now += LEASE * 2
    taken = await store.claim(pid)
    assert taken is not None
    assert taken.attempt_key == a2
    for token in (taken.claim.token, first.claim.token):
        assert await store.next_attempt(pid, a2, "p3", claim=token) is None
    assert not await store.renew(pid, first.claim.token)
    assert not await store.schedule_retry(pid, clock.now, claim=first.claim.token)
    await store.release(pid, first.claim.token)
    assert await claim_of(engine, pid) == taken.claim.token


async def test_a_claim_released_on_cancellation_never_allows_a_second_key(engine):
    clock = Clock()
    p1 = Acquirer("p1", charge=("hang", "unavailable", "ok"))
    p2 = Acquirer("p2")
    command = create_payment()
    first = payment_handler(PaymentStore(engine, clock), clock, p1, p2, route=["p1", "p2"])
    task = asyncio.create_task(first.handle(command))
    await p1.hanging.wait()  # a1 is on its way to p1
    task.cancel()  # a rebalance drain: the claim is given up at once
    with contextlib.suppress(asyncio.CancelledError):
        await task
    pid = command.payment_request_id
    assert await claim_of(engine, pid) is None
    # The next owner re-sends a1 at p1, meets a 503, and keeps to a1 at p1 (no a2 at p2).
    store = PaymentStore(engine, clock)
    again = payment_handler(store, clock, p1, p2, route=["p1", "p2"])
    assert await again.handle(command) is Outcome.SUCCEEDED
    p1.land()
    assert list(p1.charges) == [f"{pid}-a1"]
    assert p2.sent == []
    assert [a.attempt_key for a in await attempts_of(engine, pid)] == [f"{pid}-a1"]


async def test_a_stale_charge_owner_cannot_touch_a_capture_under_way(engine):
    clock = Clock()
    store = PaymentStore(engine, clock, claim_lease=LEASE)
    captures = CaptureStore(engine, store.writes, clock, claim_lease=LEASE)
    command = dataclasses.replace(create_payment(), capture=False)
    first = await begun(store, command)
    pid, key = command.payment_request_id, first.attempt_key
    clock.now += LEASE * 2
    taken = await store.claim(pid)
    assert taken is not None
    auth = PaymentStatus.AUTHORIZED
    assert await finish(store, pid, key, taken.claim.token, auth, "succeeded", "ch_1")
    capture = await captures.begin(
        capture_of(pid, command.order_id), lambda *_: pytest.fail("not refused")
    )
    assert isinstance(capture, CaptureStarted)
    # Both former charge owners write every way they could: nothing changes, nothing raises.
    for token in (first.claim.token, taken.claim.token):
        for status, attempt in (
            (PaymentStatus.SUCCEEDED, "succeeded"),
            (PaymentStatus.FAILED, "failed"),
            (PaymentStatus.AUTHORIZED, "succeeded"),
            (PaymentStatus.PENDING, "unknown"),
        ):
            assert not await finish(store, pid, key, token, status, attempt, "ch_1")
        assert not await store.renew(pid, token)
        await store.release(pid, token)
        assert await store.claim(pid) is None
    assert await status_of(store, pid) is PaymentStatus.CAPTURING
    assert await claim_of(engine, pid) == capture.claim.token
    assert await captures.finish(
        pid, claim=capture.claim.token, captured=True, error=None, event=EVENTS.of_payment
    )
    assert await status_of(store, pid) is PaymentStatus.SUCCEEDED


async def test_a_batch_mixing_an_owners_and_a_non_owners_finish_of_one_payment(engine):
    clock = Clock()
    store = PaymentStore(engine, clock, claim_lease=LEASE)
    one, other = create_payment(), create_payment()
    first = await begun(store, one)
    second = await begun(store, other)
    pid = one.payment_request_id
    clock.now += LEASE * 2
    taken = await store.claim(pid)
    assert taken is not None
    ok, fail = PaymentStatus.SUCCEEDED, PaymentStatus.FAILED
    # One group-commit batch: the former owner's charge, the owner's, and another payment's.
    results = await asyncio.gather(
        finish(store, pid, first.attempt_key, first.claim.token, ok, "succeeded", "ch_1"),
        finish(store, pid, first.attempt_key, taken.claim.token, ok, "succeeded", "ch_1"),
        finish(
            store,
            other.payment_request_id,
            second.attempt_key,
            second.claim.token,
            fail,
            "declined",
            None,
        ),
        store.renew(pid, first.claim.token),
        store.next_attempt(pid, first.attempt_key, "p2", claim=first.claim.token),
    )
    assert list(results) == [False, True, True, False, None]
    assert await status_of(store, pid) is PaymentStatus.SUCCEEDED
    assert await status_of(store, other.payment_request_id) is PaymentStatus.FAILED
    (attempt,) = await attempts_of(engine, pid)
    assert (attempt.status, attempt.provider_reference) == ("succeeded", "ch_1")


async def test_concurrent_full_refunds_from_two_processes_reserve_once(engine):
    clock = Clock()
    acquirer = Acquirer()
    command = create_payment()
    store = PaymentStore(engine, clock)
    assert await payment_handler(store, clock, acquirer).handle(command) is Outcome.SUCCEEDED
    pid = command.payment_request_id
    # Two processes: separate write queues, so separate transactions on PostgreSQL.
    stores = [RefundStore(engine, PaymentStore(engine, clock).writes, clock) for _ in range(2)]
    results = await asyncio.gather(
        *(s.begin(refund_of(pid, command.order_id), REFUND_EVENTS.at(NOW)) for s in stores)
    )
    assert sorted(type(r).__name__ for r in results) == ["RefundRefused", "RefundStarted"]
    refused = next(r for r in results if isinstance(r, RefundRefused))
    assert refused.error.code is ErrorCode.REFUND_EXCEEDS_CAPTURED
    started = next(r for r in results if isinstance(r, RefundStarted))
    # A second worker cannot take the new refund while its owner holds it.
    assert await stores[1].claim(started.refund.refund_id) is None
    payment = await store.get_payment(pid)
    assert payment is not None
    assert payment.refund_reserved_minor == command.amount.minor_units


@pytest.mark.parametrize("capture", [True, False], ids=["captured", "authorized-then-captured"])
async def test_the_stray_sweep_leaves_the_payments_own_charge_alone(engine, capture):
    clock = Clock()
    store = PaymentStore(engine, clock)
    p1, p2 = Acquirer("p1", charge=("unavailable",)), Acquirer("p2")
    command = dataclasses.replace(create_payment(), capture=capture)
    handler = payment_handler(store, clock, p1, p2, route=["p1", "p2"])
    await handler.handle(command)
    pid = command.payment_request_id
    if not capture:
        captures = CaptureStore(engine, store.writes, clock)
        capturer = CaptureCommandHandler(
            store=captures, providers=Providers.of(p1, p2), events=EVENTS, metrics=Metrics()
        )
        assert await capturer.handle(capture_of(pid, command.order_id)) is Outcome.SUCCEEDED
    refunder = RefundCommandHandler(
        store=RefundStore(engine, store.writes, clock),
        providers=Providers.of(p1, p2),
        events=REFUND_EVENTS,
        metrics=Metrics(),
        clock=clock,
    )
    partial = refund_of(pid, command.order_id, Money(50, command.amount.currency))
    assert await refunder.handle(partial) is Outcome.SUCCEEDED
    assert await status_of(store, pid) is PaymentStatus.PARTIALLY_REFUNDED
    clock.now += timedelta(hours=1)
    stray_store = StrayStore(engine, store.writes, clock)
    sweep = StraySweep(
        store=stray_store,
        providers=Providers.of(p1, p2),
        metrics=Metrics(),
        settle_after=timedelta(0),
        clock=clock,
    )
    report = await sweep.run_once()
    assert (report.found, report.reversed) == (0, 0)
    assert report.verified >= 1  # a1, closed as not charged, was asked about
    assert await stray_store.all() == []
    ((_reference, refunded),) = p2.refunded.items()
    assert refunded == 50
    assert [k for op, k in p2.sent if op == "refund"] == [partial.refund_id]
    assert await status_of(store, pid) is PaymentStatus.PARTIALLY_REFUNDED


async def test_no_sealed_command_outlives_its_attempt_nor_opens_without_the_key(engine):
    clock = Clock()
    p1, p2 = Acquirer("p1", charge=("unavailable",)), Acquirer("p2", charge=("timeout",))
    command = create_payment()
    route = ["p1", "p2"]
    first = payment_handler(PaymentStore(engine, clock), clock, p1, p2, route=route)
    assert await first.handle(command) is Outcome.PENDING
    pid = command.payment_request_id
    a1, a2 = await attempts_of(engine, pid)
    assert a1.sealed_request is None
    assert a2.sealed_request is not None
    assert CommandSealer(b"another key").unseal(a2.sealed_request, pid) is None
    assert CommandSealer(ACCOUNT_KEY).unseal(a2.sealed_request, "another-payment") is None
    assert isinstance(command.payer, Account)
    assert command.payer.number.encode() not in a2.sealed_request
    # The reconciler re-sends a2 from its sealed command; once final, nothing sealed stays.
    clock.now += timedelta(seconds=1)
    store = PaymentStore(engine, clock)
    reconciler = PaymentReconciler(
        store=store,
        handler=payment_handler(store, clock, p1, p2, route=route),
        metrics=Metrics(),
        min_age=timedelta(0),
        clock=clock,
    )
    assert (await reconciler.run_once()).resolved == 1
    assert await status_of(store, pid) is PaymentStatus.SUCCEEDED
    assert [a.sealed_request for a in await attempts_of(engine, pid)] == [None, None]


# --- an enumeration: failover over three providers, two workers, zombies ------------------


CheckpointedStore = checkpointed(PaymentStore, PAYMENT_WRITES, lease=LEASE)


async def test_two_workers_on_a_three_provider_route_charge_once(engine):
    every = 4 if engine.dialect.name == "sqlite" else 24
    schedules = list(bounded_schedules(2, 12, switches=2))[::every]
    for schedule in schedules:
        clock = Clock()

        def tick(clock: Clock = clock) -> None:
            clock.now += timedelta(seconds=20)  # claims expire mid-flight: zombies

        il = Interleaving(schedule, on_step=tick)
        acquirers = [
            Acquirer("p1", charge=("unavailable", "unavailable"), interleaving=il),
            Acquirer("p2", charge=("unavailable", "unavailable"), interleaving=il),
            Acquirer("p3", interleaving=il),
        ]
        command = create_payment()
        handlers = [
            payment_handler(
                CheckpointedStore(engine, clock, il), clock, *acquirers, route=["p1", "p2", "p3"]
            )
            for _ in range(2)
        ]
        results = await il.run([functools.partial(h.handle, command) for h in handlers])
        context = f"trace: {il.trace}"
        assert [r for r in results if isinstance(r, BaseException)] == [], context
        pid = command.payment_request_id
        charged = [k for a in acquirers for k in a.charges]
        assert len(charged) <= 1, f"double charge {charged}; {context}"
        status = await status_of(PaymentStore(engine, clock), pid)
        attempts = await attempts_of(engine, pid)
        assert status.is_final, context
        assert (status is PaymentStatus.SUCCEEDED) == (len(charged) == 1), context
        assert [a.attempt_key for a in attempts if a.finished_at is None] == [], context
        assert [a.attempt_key for a in attempts if a.status == "succeeded"] == charged, context
        assert all(a.sealed_request is None for a in attempts), context
