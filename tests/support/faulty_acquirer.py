"""A provider double that charges by attempt key, with faults chosen per key, for the
tests of what one misbehaving payment may not stop (reconciliation passes, sweeps)."""

from __future__ import annotations

from datetime import timedelta

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
    """Charges by attempt key, idempotently, with three faults chosen per key:
    ``timeout_once`` (the first call times out before reaching the provider),
    ``unreadable`` (its status answer raises a non-provider exception) and ``charged_anyway``
    (the call is refused, yet the provider charged: a stray charge)."""

    name = "sandbox"
    idempotency_window = None  # keys honoured for ever
    status_search_lag = timedelta(0)  # its status reads ``charges``, which a charge writes

    def __init__(self) -> None:
        self.charges: dict[str, ChargeOutcome] = {}
        self.refunds: dict[str, RefundOutcome] = {}
        self.timeout_once: set[str] = set()
        self.unreadable: set[str] = set()
        self.charged_anyway: set[str] = set()

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
        found = [c for c in self.charges.values() if c.provider_reference == provider_reference]
        return found[0] if found else None

    async def close_charge(self, attempt_key: str) -> ChargeOutcome | None:
        raise UnsupportedOperationError(self.name, "not in this test")

    async def capture(self, request: CaptureRequest) -> ChargeOutcome:
        raise UnsupportedOperationError(self.name, "not in this test")

    async def cancel(self, request: CancelRequest) -> ChargeOutcome:
        raise UnsupportedOperationError(self.name, "not in this test")

    async def refund(self, request: RefundRequest) -> RefundOutcome:
        return self.refunds.setdefault(
            request.refund_key,
            RefundOutcome(ProviderRefundStatus.SUCCEEDED, f"re_{request.refund_key}"),
        )

    async def refund_status(self, refund_key: str, charge_reference: str) -> RefundOutcome | None:
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
