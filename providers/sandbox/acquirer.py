"""The sandbox acquirer's decisions, shared by the in-process provider and the HTTP service.

A charge call, in order:

1. waits the configured base latency (plus jitter), as a network and an acquirer would;
2. replays the stored row if the idempotency key is known with the same parameters, or
   refuses the call if the parameters differ;
3. decides: the payer's test number picks a :class:`Behaviour` (a latency number first
   waits ``account_latency_s``, recording nothing), then injected faults may turn the call
   into a 5xx (nothing recorded) or a hang (recorded, answered late);
4. records the outcome, atomically with the key check, so concurrent calls with one key
   charge once;
5. answers, after the slow or hang delay if the behaviour asks for one.

Recording before the delay is the point of the hang: the caller times out, yet a status
query finds the charge, exactly the in-doubt case paygate must reconcile.

Charge calls not answered yet are listed by :meth:`SandboxAcquirer.in_flight` (key and
payment reference), so a chaos run can tell when some consumer is calling for a payment.

A charge asked with ``capture=False`` is recorded ``authorized``; :meth:`capture` makes it
``succeeded`` once, per capture key (a smaller amount releases the rest); :meth:`cancel`
voids it (``canceled``). An authorization not captured or voided within
``authorization_hold_s`` expires: every read of it after that finds it ``expired``
(recorded at that read, as the end of a hold is news nobody sends). Refunds
(:meth:`refund`) are rows of their own, keyed by the refund key, checked against what
remains of the charge atomically with the insert; how they go was decided when the charge
was made (``ChargeRecord.refunds``). Refunds, captures and voids wait the base latency but
see no injected faults.

A payer-action number records the charge ``requires_action`` with an expiry; the payer
(a test) completes or denies it with :meth:`complete_action` before then, or paygate closes
it with :meth:`close` (``expired``). Whichever comes first wins, atomically in the ledger.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta

from domain.clock import utc_now
from domain.errors import ErrorCode
from providers.sandbox.accounts import AccountOutcome, Behaviour, Timing, behaviour_for
from providers.sandbox.config import SandboxConfig
from providers.sandbox.errors import (
    SandboxIdempotencyConflictError,
    SandboxRefusedError,
    SandboxUnavailableError,
)
from providers.sandbox.ledger import ActionOutcome, Ledger, refunded_minor
from providers.sandbox.records import (
    ChargeRecord,
    SandboxChargeParams,
    SandboxErrorCode,
    SandboxStatus,
)
from providers.sandbox.refund_records import (
    RefundBehaviour,
    RefundRecord,
    SandboxCaptureParams,
    SandboxRefundErrorCode,
    SandboxRefundParams,
    SandboxRefundStatus,
)
from providers.sandbox.stats import SandboxStats, summarize

log = logging.getLogger(__name__)

_FAILED_BEFORE = "the sandbox failed before processing the charge"


class SandboxAcquirer:
    def __init__(
        self,
        ledger: Ledger,
        config: SandboxConfig | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.ledger = ledger
        self.config = config if config is not None else SandboxConfig()
        self._clock = clock
        self._random = random.Random(self.config.seed)
        # Payment references that already had their one failure (``unavailable_first``).
        # In memory on purpose: a restarted sandbox fails each reference's first call again.
        self._failed_once: set[str] = set()
        self._in_flight: Counter[tuple[str, str]] = Counter()  # (key, reference) -> calls

    async def start(self) -> None:
        await self.ledger.start()

    async def stop(self) -> None:
        await self.ledger.stop()

    async def charge(self, idempotency_key: str, params: SandboxChargeParams) -> ChargeRecord:
        """Charge once per key; raises the errors of :mod:`providers.sandbox.errors`."""
        call = (idempotency_key, params.payment_reference)
        self._in_flight[call] += 1
        try:
            return await self._charge(idempotency_key, params)
        finally:
            self._in_flight[call] -= 1
            if not self._in_flight[call]:
                del self._in_flight[call]

    def in_flight(self) -> list[tuple[str, str]]:
        """(idempotency key, payment reference) of every charge call not answered yet."""
        return sorted(self._in_flight)

    async def _charge(self, idempotency_key: str, params: SandboxChargeParams) -> ChargeRecord:
        # Both draws happen on every call so that, with a seed, one rate does not shift
        # the other's sequence.
        fail_roll, timeout_roll = self._random.random(), self._random.random()
        jitter = self._random.uniform(0.0, self.config.latency_jitter_ms)
        await _sleep((self.config.latency_ms + jitter) / 1000.0)

        request_hash = params.request_hash()
        existing = await self.ledger.get(idempotency_key)
        if existing is not None:
            return _replay(existing, request_hash)

        behaviour = behaviour_for(params.payer.number)
        if behaviour.latency:
            await _sleep(self.config.account_latency_s)
        if fail_roll < self.config.failure_rate:
            raise SandboxUnavailableError(_FAILED_BEFORE)
        if behaviour.outcome is AccountOutcome.UNAVAILABLE:
            raise SandboxUnavailableError(_FAILED_BEFORE, behaviour.retry_after)
        if behaviour.unavailable_first and params.payment_reference not in self._failed_once:
            # Keyed by payment reference, not idempotency key: paygate's retry of a payment
            # comes with a new attempt key and must get through. Decided after the latency
            # wait, so of two calls waiting at once the first to finish it takes the failure.
            self._failed_once.add(params.payment_reference)
            raise SandboxUnavailableError(_FAILED_BEFORE, behaviour.retry_after)
        timing = Timing.HANG if timeout_roll < self.config.timeout_rate else behaviour.timing

        record = self._record(idempotency_key, request_hash, params, behaviour)
        stored = await self.ledger.insert_if_absent(record)
        if stored.charge_id != record.charge_id:
            # A concurrent call with the same key recorded first: this one is its duplicate.
            return _replay(stored, request_hash)
        log.debug(
            "sandbox charge %s %s for %s from %s",
            stored.charge_id,
            stored.status.value,
            stored.payment_reference,
            stored.payer_masked,
        )
        if timing is Timing.SLOW:
            await _sleep(self.config.slow_delay_s)
        elif timing is Timing.HANG:
            await _sleep(self.config.hang_s)
        return stored

    async def status(self, idempotency_key: str) -> ChargeRecord | None:
        return await self._held(await self.ledger.get(idempotency_key))

    async def complete_action(self, charge_id: str, *, approve: bool) -> ChargeRecord:
        """The payer completes (``approve``) or fails the charge's action; raises
        SandboxRefusedError when there is no such charge or it no longer waits."""
        charge = await self.ledger.get_by_charge_id(charge_id)
        if charge is None:
            raise SandboxRefusedError(ErrorCode.NOT_FOUND, "no charge with this id", "chargeId")
        expires_at = charge.action_expires_at
        if expires_at is not None and self._clock() >= expires_at:
            raise SandboxRefusedError(
                ErrorCode.PAYMENT_EXPIRED, "the action has expired", "chargeId"
            )
        if approve:
            after = charge.after_action or SandboxStatus.SUCCEEDED
            captured = charge.amount_minor if after is SandboxStatus.SUCCEEDED else 0
            outcome = ActionOutcome(after, captured)
        else:
            outcome = ActionOutcome(
                SandboxStatus.DECLINED,
                error_code=SandboxErrorCode.CARD_DECLINED,
                decline_code="authentication_failed",
            )
        stored = await self.ledger.finish_action(charge_id, outcome)
        assert stored is not None  # rows are never deleted
        if stored.status is not outcome.status:
            raise SandboxRefusedError(
                ErrorCode.INVALID_REQUEST,
                f"the charge is {stored.status.value}: it does not wait for the payer",
                "chargeId",
            )
        return stored

    async def close(self, idempotency_key: str) -> ChargeRecord | None:
        """Close a charge still waiting for its payer (``expired``); a charge the payer
        finished first keeps its outcome. None if the key is unknown."""
        charge = await self.ledger.get(idempotency_key)
        if charge is None or charge.status is not SandboxStatus.REQUIRES_ACTION:
            return charge
        return await self.ledger.finish_action(
            charge.charge_id, ActionOutcome(SandboxStatus.EXPIRED)
        )

    async def charge_by_id(self, charge_id: str) -> ChargeRecord | None:
        return await self._held(await self.ledger.get_by_charge_id(charge_id))

    async def refunded_of(self, charge_id: str) -> int:
        """What the charge's refunds return or still may (succeeded and pending), in minor
        units: what a provider read of the charge reports refunded (Stripe's
        ``amount_refunded``), whoever asked for the refunds (paygate, or the dashboard)."""
        return refunded_minor(await self.ledger.refunds(), charge_id)

    async def _held(self, charge: ChargeRecord | None) -> ChargeRecord | None:
        """The charge as it is now: an authorization whose hold ran out has expired."""
        if charge is None or charge.status is not SandboxStatus.AUTHORIZED:
            return charge
        hold = timedelta(seconds=self.config.authorization_hold_s)
        if charge.created_at + hold > self._clock():
            return charge
        return await self.ledger.release(charge.charge_id, SandboxStatus.EXPIRED)

    async def cancel(self, charge_id: str) -> ChargeRecord:
        """Void an authorized charge: ``canceled``, or ``expired`` if its hold ran out first.

        A void is idempotent per charge, whatever its key: voiding a released charge again
        answers it as it is. A captured or declined charge is refused, and nothing changes.
        """
        await self._base_latency()
        charge = await self.charge_by_id(charge_id)
        if charge is None:
            raise SandboxRefusedError(ErrorCode.NOT_FOUND, "no charge with this id", "chargeId")
        if charge.status is SandboxStatus.AUTHORIZED:
            released = await self.ledger.release(charge_id, SandboxStatus.CANCELED)
            assert released is not None  # rows are never deleted
            charge = released
        if charge.status not in (SandboxStatus.CANCELED, SandboxStatus.EXPIRED):
            # A capture won the race for the same authorization, or it never held money.
            raise SandboxRefusedError(
                ErrorCode.PAYMENT_NOT_CANCELABLE,
                f"the charge is {charge.status.value}, not authorized: nothing to release",
                "chargeId",
            )
        return charge

    async def charges(self) -> list[ChargeRecord]:
        return await self.ledger.all()

    async def capture(self, capture_key: str, params: SandboxCaptureParams) -> ChargeRecord:
        """Capture an authorized charge once per key; a smaller amount releases the rest."""
        await self._base_latency()
        charge = await self.charge_by_id(params.charge_id)
        if charge is None:
            raise SandboxRefusedError(ErrorCode.NOT_FOUND, "no charge with this id", "chargeId")
        if charge.capture_key != capture_key:
            _check_capturable(charge, params)
            stored = await self.ledger.capture(
                params.charge_id, capture_key, params.amount.minor_units
            )
            assert stored is not None  # rows are never deleted
            charge = stored
        if charge.capture_key != capture_key:
            # Another capture key won the race for the same authorization.
            _check_capturable(charge, params)
        if (charge.captured_minor, charge.currency) != (
            params.amount.minor_units,
            params.amount.currency,
        ):
            raise SandboxIdempotencyConflictError(
                "the capture key was already used with a different amount"
            )
        return charge

    async def refund(self, refund_key: str, params: SandboxRefundParams) -> RefundRecord:
        """Refund once per key, within what remains of a captured charge."""
        await self._base_latency()
        request_hash = params.request_hash()
        existing = await self.ledger.get_refund(refund_key)
        if existing is not None:
            return await self._settled(_replay_refund(existing, request_hash))
        charge = await self.ledger.get_by_charge_id(params.charge_id)
        _check_refundable(charge, params)
        assert charge is not None  # checked just above
        record = self._refund_record(refund_key, request_hash, params, charge.refunds)
        stored = await self.ledger.insert_refund_if_absent(record, charge.captured_minor)
        if stored is None:
            raise SandboxRefusedError(
                ErrorCode.REFUND_EXCEEDS_CAPTURED,
                "the refund is above what remains of the charge",
                "amountMinor",
            )
        if stored.refund_id != record.refund_id:
            return await self._settled(_replay_refund(stored, request_hash))
        log.debug(
            "sandbox refund %s %s of %s", stored.refund_id, stored.status.value, stored.charge_id
        )
        return stored

    async def refund_status(self, refund_key: str) -> RefundRecord | None:
        stored = await self.ledger.get_refund(refund_key)
        return None if stored is None else await self._settled(stored)

    async def refunds(self) -> list[RefundRecord]:
        return [await self._settled(row) for row in await self.ledger.refunds()]

    async def _settled(self, refund: RefundRecord) -> RefundRecord:
        """The refund as it is now: a pending refund whose time has come has succeeded."""
        due = refund.settles_at is not None and refund.settles_at <= self._clock()
        if refund.status is SandboxRefundStatus.PENDING and due:
            settled = await self.ledger.settle_refund(refund.idempotency_key)
            assert settled is not None  # rows are never deleted
            return settled
        return refund

    def _refund_record(
        self,
        refund_key: str,
        request_hash: str,
        params: SandboxRefundParams,
        behaviour: RefundBehaviour,
    ) -> RefundRecord:
        now = self._clock()
        status, settles_at, error = {
            RefundBehaviour.SUCCEED: (SandboxRefundStatus.SUCCEEDED, None, None),
            RefundBehaviour.SETTLE_LATER: (
                SandboxRefundStatus.PENDING,
                now + timedelta(seconds=self.config.refund_settle_s),
                None,
            ),
            RefundBehaviour.FAIL: (
                SandboxRefundStatus.FAILED,
                None,
                SandboxRefundErrorCode.REFUND_DECLINED,
            ),
        }[behaviour]
        return RefundRecord(
            idempotency_key=refund_key,
            refund_id="re_" + uuid.uuid4().hex,
            request_hash=request_hash,
            charge_id=params.charge_id,
            refund_reference=params.refund_reference,
            payment_reference=params.payment_reference,
            amount_minor=params.amount.minor_units,
            currency=params.amount.currency,
            reason=params.reason,
            status=status,
            error_code=error,
            created_at=now,
            settles_at=settles_at,
        )

    async def _base_latency(self) -> None:
        await _sleep(self.config.latency_ms / 1000.0)

    async def stats(self) -> SandboxStats:
        return summarize(await self.ledger.all())

    def _record(
        self,
        idempotency_key: str,
        request_hash: str,
        params: SandboxChargeParams,
        behaviour: Behaviour,
    ) -> ChargeRecord:
        now = self._clock()
        after_action = None
        action_expires_at = None
        if behaviour.outcome is AccountOutcome.DECLINED:
            status = SandboxStatus.DECLINED
        else:
            status = SandboxStatus.SUCCEEDED if params.capture else SandboxStatus.AUTHORIZED
        if behaviour.payer_action:
            status, after_action = SandboxStatus.REQUIRES_ACTION, status
            action_expires_at = now + timedelta(seconds=self.config.action_ttl_s)
        captured = params.amount.minor_units if status is SandboxStatus.SUCCEEDED else 0
        return ChargeRecord(
            idempotency_key=idempotency_key,
            charge_id="ch_" + uuid.uuid4().hex,
            request_hash=request_hash,
            payment_reference=params.payment_reference,
            amount_minor=params.amount.minor_units,
            currency=params.amount.currency,
            payer_masked=params.payer.masked,
            status=status,
            error_code=behaviour.error_code,
            decline_code=behaviour.decline_code,
            created_at=now,
            refunds=behaviour.refunds,
            captured_minor=captured,
            action_expires_at=action_expires_at,
            after_action=after_action,
        )


def _replay(stored: ChargeRecord, request_hash: str) -> ChargeRecord:
    if stored.request_hash != request_hash:
        raise SandboxIdempotencyConflictError(
            "the idempotency key was already used with different parameters"
        )
    return stored


def _replay_refund(stored: RefundRecord, request_hash: str) -> RefundRecord:
    if stored.request_hash != request_hash:
        raise SandboxIdempotencyConflictError(
            "the refund key was already used with different parameters"
        )
    return stored


def _check_capturable(charge: ChargeRecord, params: SandboxCaptureParams) -> None:
    if params.amount.currency != charge.currency:
        raise SandboxRefusedError(
            ErrorCode.CURRENCY_MISMATCH, "the capture's currency is not the charge's", "currency"
        )
    if charge.status in (SandboxStatus.CANCELED, SandboxStatus.EXPIRED):
        raise SandboxRefusedError(
            ErrorCode.PAYMENT_NOT_CAPTURABLE,
            f"the charge is {charge.status.value}: its authorization was released",
            "chargeId",
        )
    if charge.status is not SandboxStatus.AUTHORIZED:
        raise SandboxRefusedError(
            ErrorCode.INVALID_REQUEST,
            f"the charge is {charge.status.value}, not authorized: nothing to capture",
            "chargeId",
        )
    if params.amount.minor_units > charge.amount_minor:
        raise SandboxRefusedError(
            ErrorCode.INVALID_AMOUNT, "the capture is above the authorized amount", "amountMinor"
        )


def _check_refundable(charge: ChargeRecord | None, params: SandboxRefundParams) -> None:
    if charge is None:
        raise SandboxRefusedError(
            ErrorCode.PAYMENT_NOT_REFUNDABLE, "no charge with this id", "chargeId"
        )
    if charge.status is not SandboxStatus.SUCCEEDED:
        raise SandboxRefusedError(
            ErrorCode.PAYMENT_NOT_REFUNDABLE,
            f"the charge is {charge.status.value}: nothing captured to refund",
            "chargeId",
        )
    if params.amount.currency != charge.currency:
        raise SandboxRefusedError(
            ErrorCode.CURRENCY_MISMATCH, "the refund's currency is not the charge's", "currency"
        )


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)
