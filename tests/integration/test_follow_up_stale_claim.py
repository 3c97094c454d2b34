"""A capture is resolved as it is under the claim, never from a view read before it.

Found by an adversarial review: the reconciler (and a redelivered capture) read a payment
``capturing`` 30.00, then took the claim in a transaction of their own. In between, the
capture of 30.00 was settled (declined: the payment went back to ``authorized``) and a
capture of 50.00 began and timed out. (The 30.00 capture's one send is declined while its
worker's lease has run out, so the reconciler may list it: a decline of a *re-send* would
leave it ``capturing``, since the first send may still land: consumer.follow_up_handler.)
Resolved from the old view, the provider was sent a capture of 30.00 under the old capture
key while the store recorded 50.00 captured: the store and the provider disagreed on the
money taken. The claim now hands back the payment as read under its lock, and these
schedules, made deterministic by running the other worker's commands at the moment the
claim is asked for, check store and provider agree.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select

from consumer.capture_handler import CaptureCommandHandler
from consumer.capture_reconciler import CaptureReconciler
from consumer.outcome import Outcome
from domain.captures import CapturePayment
from domain.errors import ErrorCode, PaygateError
from domain.money import Money
from domain.retry import RetryPolicy
from domain.status import PaymentStatus
from persistence.capture_store import CaptureStore
from persistence.follow_up import FollowUpStarted
from persistence.group_commit import GroupCommit
from persistence.tables import payments
from providers.charge_only import ChargeOnlyProvider
from providers.errors import ProviderTimeoutError
from providers.port import CaptureRequest, ChargeOutcome, ChargeRequest, ChargeStatus
from providers.registry import Providers
from telemetry.metrics import Metrics
from tests.support.authorized_payments import EVENTS, authorized

AMOUNT = Money(10_000, "EUR")


class ScriptedCaptures(ChargeOnlyProvider):
    """Answers captures from a script (lost, declined, captured) and remembers the one it
    took; asked about the charge, says captured once one was taken, else authorized. A
    ``held-declined`` answer is declined only once :attr:`answer` is set (a slow call):
    :attr:`arrived` is set when it reaches the provider."""

    def __init__(self, script: list[str]) -> None:
        super().__init__()
        self.script = script
        self.sent: list[CaptureRequest] = []
        self.taken: CaptureRequest | None = None
        self.arrived = asyncio.Event()
        self.answer = asyncio.Event()

    @property
    def name(self) -> str:
        return "sandbox"

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        raise AssertionError("the payments are authorized before the schedule")

    async def capture(self, request: CaptureRequest) -> ChargeOutcome:
        self.sent.append(request)
        answer = self.script.pop(0) if self.script else "capture"
        if answer == "lost":
            raise ProviderTimeoutError(self.name, "lost before it arrived")
        if answer == "held-declined":
            self.arrived.set()
            await self.answer.wait()
            answer = "declined"
        if answer == "declined":
            error = PaygateError(ErrorCode.PAYMENT_NOT_CAPTURABLE, "declined")
            return ChargeOutcome(ChargeStatus.DECLINED, request.charge_reference, error=error)
        self.taken = request
        return ChargeOutcome(ChargeStatus.SUCCEEDED, request.charge_reference)

    async def charge_by_reference(self, reference: str) -> ChargeOutcome | None:
        status = ChargeStatus.AUTHORIZED if self.taken is None else ChargeStatus.SUCCEEDED
        return ChargeOutcome(status, reference)


class MeanwhileAtClaim(CaptureStore):
    """The real store; the first claim asked for first lets ``meanwhile`` run (another
    worker's commands), then takes the claim."""

    meanwhile: Callable[[], Awaitable[None]] | None = None

    async def claim(self, payment_request_id: str) -> FollowUpStarted | None:
        meanwhile, self.meanwhile = self.meanwhile, None
        if meanwhile is not None:
            await meanwhile()
        return await super().claim(payment_request_id)


def _handler(store: CaptureStore, provider: ScriptedCaptures) -> CaptureCommandHandler:
    return CaptureCommandHandler(
        store=store,
        providers=Providers.of(provider),
        events=EVENTS,
        metrics=Metrics(),
        retry_policy=RetryPolicy(max_attempts=1, base_delay_s=0.001, max_delay_s=0.001),
    )


def _capture(payment_id: str, order_id: str, amount: str) -> CapturePayment:
    return CapturePayment(payment_id, order_id, datetime.now(UTC), amount=Decimal(amount))


async def _stored(engine, payment_id: str) -> tuple[str, int | None]:
    async with engine.connect() as conn:
        row = (await conn.execute(select(payments).where(payments.c.id == payment_id))).one()
    return row.status, row.captured_minor


async def _schedule(
    engine,
) -> tuple[str, CapturePayment, ScriptedCaptures, CaptureStore, asyncio.Task[Outcome]]:
    """A capture of 30.00 whose one send is slow, its worker's lease over (the payment stays
    ``capturing`` 30.00, claimable), and what happens at the claim: that send is declined
    (the payment goes back to ``authorized``) and a capture of 50.00 starts and is lost."""
    [payment] = await authorized(engine, 1, AMOUNT)
    provider = ScriptedCaptures(["held-declined", "lost"])
    # No lease: the slow worker's claim may be taken (or the payment listed) at once.
    other = _handler(CaptureStore(engine, GroupCommit(engine), claim_lease=timedelta(0)), provider)
    first = _capture(payment.payment_id, payment.order_id, "30.00")
    slow = asyncio.create_task(other.handle(first))
    await provider.arrived.wait()
    assert await _stored(engine, payment.payment_id) == (PaymentStatus.CAPTURING.value, 3_000)

    store = MeanwhileAtClaim(engine, GroupCommit(engine))

    async def meanwhile() -> None:
        provider.answer.set()  # the slow send is declined: authorized again
        assert await slow is Outcome.AUTHORIZED
        await other.handle(_capture(payment.payment_id, payment.order_id, "50.00"))

    store.meanwhile = meanwhile
    return payment.payment_id, first, provider, store, slow


async def test_the_reconciler_resolves_the_capture_in_flight_at_its_claim(engine):
    payment_id, _, provider, store, slow = await _schedule(engine)
    reconciler = CaptureReconciler(
        store=store,
        handler=_handler(store, provider),
        metrics=Metrics(),
        min_age=timedelta(0),
        clock=lambda: datetime.now(UTC) + timedelta(seconds=5),
    )

    await reconciler.run_once()

    assert slow.done()
    assert provider.taken is not None
    assert await _stored(engine, payment_id) == (
        PaymentStatus.SUCCEEDED.value,
        provider.taken.amount.minor_units,
    )
    assert provider.taken.amount == Money(5_000, "EUR")
    assert provider.sent[-1].capture_key == provider.sent[-2].capture_key  # the 50.00 key


async def test_a_redelivered_capture_resolves_the_capture_in_flight_at_its_claim(engine):
    payment_id, first, provider, store, slow = await _schedule(engine)

    await _handler(store, provider).handle(first)

    assert slow.done()
    assert provider.taken is not None
    assert await _stored(engine, payment_id) == (
        PaymentStatus.SUCCEEDED.value,
        provider.taken.amount.minor_units,
    )
    assert provider.taken.amount == Money(5_000, "EUR")
