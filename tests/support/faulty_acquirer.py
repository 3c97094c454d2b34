"""A provider double that charges by attempt key, with faults chosen per key, for the
tests of what one misbehaving payment may not stop (reconciliation passes, sweeps)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from domain.retry import RetryPolicy
from persistence.payment_store import PaymentStore
from providers.errors import ProviderError, ProviderTimeoutError, UnsupportedOperationError
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
from tests.support.builders import ACCOUNT_KEY
from tests.support.clock import Clock


class Acquirer:
    """Charges by attempt key, refunds by refund key, captures and voids by charge,
    idempotently, with faults chosen per key: ``timeout_once`` (the first call times out
    before reaching the provider), ``no_answer`` (every refund under the key times out),
    ``unreadable`` (its status answer raises a non-provider exception) and
    ``charged_anyway`` (the call is refused, yet the provider charged: a stray charge). A
    key is an attempt key or a refund key; for a capture or a void, ``timeout_once`` takes
    the payment's id, and ``unreadable`` takes a charge reference to make
    :meth:`charge_by_reference` unreadable."""

    name = "sandbox"
    idempotency_window = None  # keys honoured for ever
    status_search_lag = timedelta(0)  # its status reads ``charges``, which a charge writes
    refund_status_lag = timedelta(0)  # its refund status reads the refunds it made

    def __init__(self) -> None:
        self.charges: dict[str, ChargeOutcome] = {}
        self.refunds: dict[str, RefundOutcome] = {}
        self.timeout_once: set[str] = set()
        self.unreadable: set[str] = set()
        self.charged_anyway: set[str] = set()
        self.no_answer: set[str] = set()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        key = request.attempt_key
        if key in self.timeout_once:
            self.timeout_once.discard(key)
            raise ProviderTimeoutError(self.name, "no answer in time")
        outcome = self.book(key)
        if key in self.charged_anyway:
            raise ProviderError(self.name, "refused")
        return outcome

    def book(self, attempt_key: str) -> ChargeOutcome:
        """The provider's charge under ``attempt_key``, made on its first call only."""
        return self.charges.setdefault(
            attempt_key, ChargeOutcome(ChargeStatus.SUCCEEDED, f"ch_{attempt_key}")
        )

    async def charge_status(self, attempt_key: str) -> ChargeOutcome | None:
        if attempt_key in self.unreadable:
            raise RuntimeError("the provider's answer about this key cannot be read")
        return self.charges.get(attempt_key)

    async def charge_by_reference(self, provider_reference: str) -> ChargeOutcome | None:
        if provider_reference in self.unreadable:
            raise RuntimeError("the provider's answer about this charge cannot be read")
        found = [c for c in self.charges.values() if c.provider_reference == provider_reference]
        return found[0] if found else None

    async def close_charge(self, attempt_key: str) -> ChargeOutcome | None:
        raise UnsupportedOperationError(self.name, "not in this test")

    async def capture(self, request: CaptureRequest) -> ChargeOutcome:
        return self._move(
            request.payment_request_id, request.charge_reference, ChargeStatus.SUCCEEDED
        )

    async def cancel(self, request: CancelRequest) -> ChargeOutcome:
        return self._move(
            request.payment_request_id, request.charge_reference, ChargeStatus.CANCELED
        )

    def _move(self, payment_id: str, reference: str, to: ChargeStatus) -> ChargeOutcome:
        """Capture or void the authorized charge ``reference`` (once: a charge already
        moved answers as it stands)."""
        if payment_id in self.timeout_once:
            self.timeout_once.discard(payment_id)
            raise ProviderTimeoutError(self.name, "no answer in time")
        for key, charge in self.charges.items():
            if charge.provider_reference == reference:
                if charge.status is ChargeStatus.AUTHORIZED:
                    self.charges[key] = ChargeOutcome(to, reference)
                return self.charges[key]
        raise ProviderError(self.name, "no such charge")

    async def refund(self, request: RefundRequest) -> RefundOutcome:
        key = request.refund_key
        if key in self.no_answer or key in self.timeout_once:
            self.timeout_once.discard(key)
            raise ProviderTimeoutError(self.name, "no answer in time")
        return self.refunds.setdefault(
            key, RefundOutcome(ProviderRefundStatus.SUCCEEDED, f"re_{key}")
        )

    async def refund_status(self, refund_key: str, charge_reference: str) -> RefundOutcome | None:
        if refund_key in self.unreadable:
            raise RuntimeError("the provider's answer about this refund cannot be read")
        return self.refunds.get(refund_key)


def one_call_handler(
    store: PaymentStore, acquirer: Acquirer, clock: Clock, metrics: Metrics | None = None
) -> PaymentCommandHandler:
    """A payment handler over ``acquirer`` alone that calls it once per command (no retry),
    so each payment meets the fault its key was given and no other call."""
    return PaymentCommandHandler(
        store=store,
        providers=Providers.of(acquirer),
        router=Router({"*": [acquirer.name]}),
        events=PaymentEvents(PaymentMessages.bundled(), "payments.results"),
        account_key=ACCOUNT_KEY,
        metrics=Metrics() if metrics is None else metrics,
        retry_policy=RetryPolicy(max_attempts=1),
        clock=clock,
    )


@dataclass
class Bench:
    """What these tests start from: a payment store on their engine, an :class:`Acquirer`,
    a clock moved by hand, a metrics container, and :func:`one_call_handler` over them."""

    engine: AsyncEngine
    clock: Clock = field(default_factory=Clock)
    acquirer: Acquirer = field(default_factory=Acquirer)
    metrics: Metrics = field(default_factory=Metrics)

    def __post_init__(self) -> None:
        self.store = PaymentStore(self.engine, self.clock)
        self.payments = one_call_handler(self.store, self.acquirer, self.clock, self.metrics)
