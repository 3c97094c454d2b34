"""Providers whose every answer a test decides, and the ledger that is the ground truth.

A test hands the providers a :class:`Script`: the answers of the next charge, refund,
capture and status calls, in the order the calls arrive (at whichever provider); once a
list is used up, calls go through (charged, refunded, captured, answered). Whatever a call is
told to answer, the ledger behaves as a real provider's does:

* **Idempotent by key.** A charge, refund or capture key processed once is never processed
  again: a later call with it gets the stored result. A key sent again with other
  parameters is refused by real providers; here it is recorded in ``misuse`` for the test
  to fail on.
* **"Unavailable" (a 503) and "timeout before" are not processed**; "timeout after" is
  processed and then its answer is lost: the caller sees a timeout, the ledger has the
  charge (the in-doubt case); "timeout unseen" too, and the provider's status search then
  misses the charge for :data:`SEARCH_LAG`: only a re-send of the key finds it. A late
  charge may be missed for a while too. The providers declare that lag
  (``status_search_lag``), as the port asks.
* **A refund may be accepted pending** and settle (succeed or fail) a minute later on the
  providers' clock, the test's clock.
* **Permissive where paygate must be strict**: a refund above what remains of the charge
  is accepted, so that the test, not the provider, notices paygate asking for it; one
  above what a partial capture took is recorded in ``misuse``.
* **A void** (``cancel``) answers from the capture script too; it voids an authorization
  once (idempotent per charge) and refuses a captured charge.
* **Keys may be forgotten.** A provider given an ``idempotency_window`` (as Stripe prunes
  its keys after 24 hours) honours a charge or refund key only that long after it first
  processed it: a call with an older key is processed again, as a new call -- a second
  charge or refund under the same key, kept in ``forgotten`` for the test to fail on. Its
  status answers still find the newest call of a key, as a real provider's do.
* **It records every payment a charge call was sent for** (``sent``), before the call is
  processed, whatever the call then answers: what a payer's account was revealed for.

Every call stops at a checkpoint when it is sent and when its answer is back (see
tests.support.interleaving), so an interleaving can hold a call in flight while other
workers go on: the call is processed only when its worker is resumed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from domain.errors import ErrorCode, PaygateError
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
from tests.support.interleaving import Gate

# How long a refund accepted as pending takes to settle, on the test's clock.
SETTLE_AFTER = timedelta(seconds=60)
# How long a charge answered TIMEOUT_UNSEEN stays out of status answers: longer than any
# idempotency window, so that only the window check keeps it from being charged again.
SEARCH_LAG = timedelta(days=2)


class ChargeAnswer(StrEnum):
    SUCCEEDED = "succeeded"  # charged (authorized, when asked not to capture)
    DECLINED = "declined"
    UNAVAILABLE = "unavailable"  # a 503: certainly not charged
    TIMEOUT_AFTER = "timeout_after"  # charged, but the answer never came back
    # Charged, the answer lost, and the provider's status search does not show the charge
    # for SEARCH_LAG (Stripe's search lags in an incident): only a re-send of the key,
    # while the provider still honours it, tells.
    TIMEOUT_UNSEEN = "timeout_unseen"
    TIMEOUT_BEFORE = "timeout_before"  # never arrived, but the caller cannot know that


class RefundAnswer(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PENDING_THEN_SUCCEEDS = "pending_then_succeeds"
    PENDING_THEN_FAILS = "pending_then_fails"
    UNAVAILABLE = "unavailable"
    TIMEOUT_AFTER = "timeout_after"


class CaptureAnswer(StrEnum):
    SUCCEEDED = "succeeded"
    UNAVAILABLE = "unavailable"
    TIMEOUT_AFTER = "timeout_after"
    TIMEOUT_BEFORE = "timeout_before"


class QueryAnswer(StrEnum):
    """For status queries (charge_status, charge_by_reference, refund_status)."""

    ANSWERED = "answered"
    UNAVAILABLE = "unavailable"


@dataclass
class Script:
    """The answers of the next calls of each kind, first first."""

    charge: list[ChargeAnswer] = field(default_factory=list)
    refund: list[RefundAnswer] = field(default_factory=list)
    capture: list[CaptureAnswer] = field(default_factory=list)
    query: list[QueryAnswer] = field(default_factory=list)


@dataclass
class LedgerCharge:
    provider: str
    key: str
    payment_id: str
    amount_minor: int
    currency: str
    capture_asked: bool
    reference: str
    status: ChargeStatus  # succeeded means captured; canceled means voided
    capture_key: str | None = None
    captured_minor: int = 0  # what a capture took: refunds may return at most this
    cancel_key: str | None = None
    created_at: datetime | None = None  # when the provider first processed the key
    late: bool = False  # charged after paygate closed the key (see ProviderLedger.charge_late)
    unseen_until: datetime | None = None  # status answers do not show it before then

    @property
    def charged(self) -> bool:
        """Money taken or held under this key."""
        return self.status in (ChargeStatus.SUCCEEDED, ChargeStatus.AUTHORIZED)

    def outcome(self) -> ChargeOutcome:
        error = None
        if self.status is ChargeStatus.DECLINED:
            error = PaygateError(ErrorCode.PAYMENT_DECLINED, "declined by the scripted provider")
        return ChargeOutcome(self.status, self.reference, error)


@dataclass
class LedgerRefund:
    provider: str
    key: str
    charge_reference: str
    amount_minor: int
    reference: str
    status: ProviderRefundStatus
    settles_at: datetime | None = None
    settles_to: ProviderRefundStatus | None = None
    error_code: ErrorCode | None = None
    created_at: datetime | None = None

    def outcome(self) -> RefundOutcome:
        error = None if self.error_code is None else PaygateError(self.error_code, "refused")
        return RefundOutcome(self.status, self.reference, error)


class ProviderLedger:
    """What the providers did, by (provider, key): the ground truth a model test checks the
    store against. Also holds the script the providers answer from."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self.script = Script()
        self.charges: dict[tuple[str, str], LedgerCharge] = {}
        self.refunds: dict[tuple[str, str], LedgerRefund] = {}
        self.misuse: list[str] = []
        # Calls of a key processed before its provider forgot the key, replaced in
        # ``charges`` / ``refunds`` by the one processed again: each a double charge/refund.
        self.forgotten_charges: list[LedgerCharge] = []
        self.forgotten_refunds: list[LedgerRefund] = []
        self.windows: dict[str, timedelta] = {}  # per provider; none: keys kept for ever
        self.sent: set[str] = set()  # payments a charge call was sent for
        self._references = 0

    def now(self) -> datetime:
        return self._clock()

    def _forgot(self, provider: str, first_processed: datetime | None) -> bool:
        window = self.windows.get(provider)
        return (
            window is not None
            and first_processed is not None
            and self._clock() - first_processed >= window
        )

    def settle_due(self) -> None:
        """Pending refunds whose time has come settle (as the providers' clock moves)."""
        now = self._clock()
        for refund in self.refunds.values():
            due = refund.settles_at is not None and refund.settles_at <= now
            if refund.status is ProviderRefundStatus.PENDING and due and refund.settles_to:
                refund.status = refund.settles_to
                if refund.status is ProviderRefundStatus.FAILED:
                    refund.error_code = ErrorCode.REFUND_FAILED

    def charge_by_reference(self, provider: str, reference: str) -> LedgerCharge | None:
        return next(
            (
                c
                for c in self.charges.values()
                if c.provider == provider and c.reference == reference
            ),
            None,
        )

    def next_reference(self, prefix: str) -> str:
        # Counted, not random: the same example makes the same references when replayed.
        self._references += 1
        return f"{prefix}_{self._references:05d}"

    def charge_status(self, provider: str, key: str) -> LedgerCharge | None:
        """What the provider's status search finds under ``key``: not a charge it lags on."""
        found = self.charges.get((provider, key))
        if found is not None and found.unseen_until and self._clock() < found.unseen_until:
            return None
        return found

    def unseen(self, payment_id: str) -> bool:
        """Whether a charge of ``payment_id`` is still missing from status answers."""
        return any(
            c.payment_id == payment_id and c.unseen_until and self._clock() < c.unseen_until
            for c in self.charges.values()
        )

    def charge(
        self, provider: str, request: ChargeRequest, *, declined: bool, unseen: bool = False
    ) -> ChargeOutcome:
        found = self.charges.get((provider, request.attempt_key))
        if found is not None and self._forgot(provider, found.created_at):
            self.forgotten_charges.append(found)
            found = None  # a new call to this provider: charged again
        asked = (
            request.payment_request_id,
            request.amount.minor_units,
            request.amount.currency,
            request.capture,
        )
        if found is not None:
            stored = (found.payment_id, found.amount_minor, found.currency, found.capture_asked)
            if stored != asked:
                self.misuse.append(f"charge key {request.attempt_key} re-sent as {asked}")
            return found.outcome()
        if declined:
            status = ChargeStatus.DECLINED
        else:
            status = ChargeStatus.SUCCEEDED if request.capture else ChargeStatus.AUTHORIZED
        charge = LedgerCharge(
            provider=provider,
            key=request.attempt_key,
            payment_id=request.payment_request_id,
            amount_minor=request.amount.minor_units,
            currency=request.amount.currency,
            capture_asked=request.capture,
            reference=self.next_reference(f"ch_{provider}"),
            status=status,
            captured_minor=request.amount.minor_units if status is ChargeStatus.SUCCEEDED else 0,
            created_at=self._clock(),
            unseen_until=self._clock() + SEARCH_LAG if unseen else None,
        )
        self.charges[(provider, request.attempt_key)] = charge
        return charge.outcome()

    def charge_late(
        self,
        provider: str,
        key: str,
        payment_id: str,
        amount_minor: int,
        currency: str,
        *,
        unseen_for: timedelta | None = None,
    ) -> LedgerCharge:
        """The payer pays under ``key`` after paygate closed it as not charged (an Alipay
        page trade the payer opens late, a trade paid across a clock skew): captured, for
        the payment's amount, and ``late``: a stray charge the sweep must find.
        ``unseen_for``: status answers miss it that long (at most :data:`SEARCH_LAG`)."""
        assert unseen_for is None or unseen_for <= SEARCH_LAG
        charge = LedgerCharge(
            provider=provider,
            key=key,
            payment_id=payment_id,
            amount_minor=amount_minor,
            currency=currency,
            capture_asked=True,
            reference=self.next_reference(f"ch_{provider}"),
            status=ChargeStatus.SUCCEEDED,
            captured_minor=amount_minor,
            created_at=self._clock(),
            late=True,
            unseen_until=None if unseen_for is None else self._clock() + unseen_for,
        )
        self.charges[(provider, key)] = charge
        return charge

    def capture(self, provider: str, request: CaptureRequest) -> ChargeOutcome:
        charge = self.charge_by_reference(provider, request.charge_reference)
        if charge is None:
            return ChargeOutcome(
                ChargeStatus.DECLINED,
                None,
                PaygateError(ErrorCode.NOT_FOUND, "no such charge"),
            )
        if charge.capture_key == request.capture_key:
            if request.amount.minor_units != charge.captured_minor:
                self.misuse.append(f"capture key {request.capture_key} re-sent for another amount")
            return charge.outcome()  # the same capture again: captured once
        if charge.capture_key is not None:
            self.misuse.append(
                f"charge {charge.reference} captured under {charge.capture_key} "
                f"and again under {request.capture_key}"
            )
        if charge.status is not ChargeStatus.AUTHORIZED:
            return ChargeOutcome(
                ChargeStatus.DECLINED,
                charge.reference,
                PaygateError(ErrorCode.PAYMENT_NOT_CAPTURABLE, f"the charge is {charge.status}"),
            )
        if request.amount.minor_units > charge.amount_minor:
            self.misuse.append(f"capture {request.capture_key} above the authorized amount")
        charge.status = ChargeStatus.SUCCEEDED
        charge.capture_key = request.capture_key
        charge.captured_minor = request.amount.minor_units
        return charge.outcome()

    def cancel(self, provider: str, request: CancelRequest) -> ChargeOutcome:
        """Void an authorization, idempotently per charge; a captured one is refused."""
        charge = self.charge_by_reference(provider, request.charge_reference)
        if charge is None:
            raise PaygateError(ErrorCode.NOT_FOUND, "no such charge")
        if charge.status is ChargeStatus.AUTHORIZED:
            charge.status = ChargeStatus.CANCELED
            charge.cancel_key = request.cancel_key
        if charge.status is not ChargeStatus.CANCELED:
            raise PaygateError(ErrorCode.PAYMENT_NOT_CANCELABLE, f"the charge is {charge.status}")
        return charge.outcome()

    def refund(self, provider: str, request: RefundRequest, answer: RefundAnswer) -> RefundOutcome:
        self.settle_due()
        found = self.refunds.get((provider, request.refund_key))
        if found is not None and self._forgot(provider, found.created_at):
            self.forgotten_refunds.append(found)
            found = None
        if found is not None:
            if (found.charge_reference, found.amount_minor) != (
                request.charge_reference,
                request.amount.minor_units,
            ):
                self.misuse.append(f"refund key {request.refund_key} re-sent with other params")
            return found.outcome()
        charge = self.charge_by_reference(provider, request.charge_reference)
        refund = LedgerRefund(
            provider=provider,
            key=request.refund_key,
            charge_reference=request.charge_reference,
            amount_minor=request.amount.minor_units,
            reference=self.next_reference(f"re_{provider}"),
            status=ProviderRefundStatus.SUCCEEDED,
            created_at=self._clock(),
        )
        taken = sum(
            r.amount_minor
            for r in self.refunds.values()
            if r.charge_reference == request.charge_reference
            and r.status is not ProviderRefundStatus.FAILED
        )
        captured = charge is not None and charge.status is ChargeStatus.SUCCEEDED
        if captured and charge and taken + request.amount.minor_units > charge.captured_minor:
            # Permissive, as for refunds above the charge: the test notices, not the provider.
            self.misuse.append(f"refund {request.refund_key} above what {charge.key} captured")
        if charge is None or charge.status is not ChargeStatus.SUCCEEDED:
            # Nothing captured to refund (a real provider refuses; the sandbox does too).
            refund.status = ProviderRefundStatus.FAILED
            refund.error_code = ErrorCode.PAYMENT_NOT_REFUNDABLE
        elif answer is RefundAnswer.FAILED:
            refund.status = ProviderRefundStatus.FAILED
            refund.error_code = ErrorCode.REFUND_FAILED
        elif answer in (RefundAnswer.PENDING_THEN_SUCCEEDS, RefundAnswer.PENDING_THEN_FAILS):
            refund.status = ProviderRefundStatus.PENDING
            refund.settles_at = self._clock() + SETTLE_AFTER
            refund.settles_to = (
                ProviderRefundStatus.SUCCEEDED
                if answer is RefundAnswer.PENDING_THEN_SUCCEEDS
                else ProviderRefundStatus.FAILED
            )
        self.refunds[(provider, request.refund_key)] = refund
        return refund.outcome()

    def refund_status(self, provider: str, refund_key: str) -> RefundOutcome | None:
        self.settle_due()
        found = self.refunds.get((provider, refund_key))
        return None if found is None else found.outcome()

    def next_charge_answer(self) -> ChargeAnswer:
        return self.script.charge.pop(0) if self.script.charge else ChargeAnswer.SUCCEEDED

    def next_refund_answer(self) -> RefundAnswer:
        return self.script.refund.pop(0) if self.script.refund else RefundAnswer.SUCCEEDED

    def next_capture_answer(self) -> CaptureAnswer:
        return self.script.capture.pop(0) if self.script.capture else CaptureAnswer.SUCCEEDED

    def next_query_answer(self) -> QueryAnswer:
        return self.script.query.pop(0) if self.script.query else QueryAnswer.ANSWERED


class ScriptedProvider:
    """One provider (``name``) answering from ``ledger``'s script, recording in its ledger;
    ``idempotency_window``: how long it honours a key (None: for ever), which the ledger
    then forgets keys after. Its status search may miss a charge for :data:`SEARCH_LAG`
    (answers ``TIMEOUT_UNSEEN``, late charges made unseen), and it says so
    (``status_search_lag``), as the port asks. ``on_call``: told of every call as it
    starts, before anything can stop (what, and the call's idempotency key if it has one),
    e.g. to check who may make it (tests.support.stray_claim_watch)."""

    status_search_lag = SEARCH_LAG
    refund_status_lag = timedelta(0)

    def __init__(
        self,
        name: str,
        ledger: ProviderLedger,
        gate: Gate,
        *,
        idempotency_window: timedelta | None = None,
        on_call: Callable[[str, str | None], None] | None = None,
    ) -> None:
        self._name = name
        self._ledger = ledger
        self._gate = gate
        self._on_call = on_call
        self.idempotency_window = idempotency_window
        if idempotency_window is not None:
            ledger.windows[name] = idempotency_window

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        self._called("charge", request.attempt_key)
        # The payer's number was revealed for this call: recorded before anything can stop.
        self._ledger.sent.add(request.payment_request_id)
        await self._gate.checkpoint(f"{self._name}.charge sent")
        answer = self._ledger.next_charge_answer()
        outcome = None
        if answer not in (ChargeAnswer.UNAVAILABLE, ChargeAnswer.TIMEOUT_BEFORE):
            outcome = self._ledger.charge(
                self._name,
                request,
                declined=answer is ChargeAnswer.DECLINED,
                unseen=answer is ChargeAnswer.TIMEOUT_UNSEEN,
            )
        await self._gate.checkpoint(f"{self._name}.charge answered")
        self._raise_for(answer)
        assert outcome is not None
        return outcome

    async def charge_status(self, attempt_key: str) -> ChargeOutcome | None:
        await self._query("charge_status", attempt_key)
        found = self._ledger.charge_status(self._name, attempt_key)
        return None if found is None else found.outcome()

    async def close_charge(self, attempt_key: str) -> ChargeOutcome | None:
        raise UnsupportedOperationError(self.name, "no payer actions in this double")

    async def charge_by_reference(self, provider_reference: str) -> ChargeOutcome | None:
        await self._query("charge_by_reference", None)
        found = self._ledger.charge_by_reference(self._name, provider_reference)
        return None if found is None else found.outcome()

    async def capture(self, request: CaptureRequest) -> ChargeOutcome:
        self._called("capture", request.capture_key)
        await self._gate.checkpoint(f"{self._name}.capture sent")
        answer = self._ledger.next_capture_answer()
        outcome = None
        if answer not in (CaptureAnswer.UNAVAILABLE, CaptureAnswer.TIMEOUT_BEFORE):
            outcome = self._ledger.capture(self._name, request)
        await self._gate.checkpoint(f"{self._name}.capture answered")
        self._raise_for(answer)
        assert outcome is not None
        return outcome

    async def cancel(self, request: CancelRequest) -> ChargeOutcome:
        self._called("cancel", request.cancel_key)
        # Voids answer from the capture script: the same weathers (503, lost answers).
        await self._gate.checkpoint(f"{self._name}.cancel sent")
        answer = self._ledger.next_capture_answer()
        outcome: ChargeOutcome | PaygateError | None = None
        if answer not in (CaptureAnswer.UNAVAILABLE, CaptureAnswer.TIMEOUT_BEFORE):
            try:
                outcome = self._ledger.cancel(self._name, request)
            except PaygateError as refused:
                outcome = refused
        await self._gate.checkpoint(f"{self._name}.cancel answered")
        self._raise_for(answer)
        if isinstance(outcome, PaygateError):
            raise outcome
        assert outcome is not None
        return outcome

    async def refund(self, request: RefundRequest) -> RefundOutcome:
        self._called("refund", request.refund_key)
        await self._gate.checkpoint(f"{self._name}.refund sent")
        answer = self._ledger.next_refund_answer()
        outcome = None
        if answer is not RefundAnswer.UNAVAILABLE:
            outcome = self._ledger.refund(self._name, request, answer)
        await self._gate.checkpoint(f"{self._name}.refund answered")
        self._raise_for(answer)
        assert outcome is not None
        return outcome

    async def refund_status(self, refund_key: str, charge_reference: str) -> RefundOutcome | None:
        await self._query("refund_status", refund_key)
        return self._ledger.refund_status(self._name, refund_key)

    async def _query(self, what: str, key: str | None) -> None:
        self._called(what, key)
        await self._gate.checkpoint(f"{self._name}.{what}")
        if self._ledger.next_query_answer() is QueryAnswer.UNAVAILABLE:
            raise ProviderUnavailableError(self._name, f"503 to {what}")

    def _called(self, what: str, key: str | None) -> None:
        if self._on_call is not None:
            self._on_call(f"{self._name}.{what}", key)

    def _raise_for(self, answer: ChargeAnswer | RefundAnswer | CaptureAnswer) -> None:
        if answer in _UNAVAILABLE:
            raise ProviderUnavailableError(self._name, "503 before processing")
        if answer in _TIMEOUT:
            raise ProviderTimeoutError(self._name, "no answer in time")


_UNAVAILABLE = frozenset(
    {ChargeAnswer.UNAVAILABLE, RefundAnswer.UNAVAILABLE, CaptureAnswer.UNAVAILABLE}
)
_TIMEOUT = frozenset(
    {
        ChargeAnswer.TIMEOUT_AFTER,
        ChargeAnswer.TIMEOUT_UNSEEN,
        ChargeAnswer.TIMEOUT_BEFORE,
        RefundAnswer.TIMEOUT_AFTER,
        CaptureAnswer.TIMEOUT_AFTER,
        CaptureAnswer.TIMEOUT_BEFORE,
    }
)
