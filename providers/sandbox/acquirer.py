"""The sandbox acquirer's decisions, shared by the in-process provider and the HTTP service.

A charge call, in order:

1. waits the configured base latency (plus jitter), as a network and an acquirer would;
2. replays the stored row if the idempotency key is known with the same parameters, or
   refuses the call if the parameters differ;
3. decides: the payer's test number picks a :class:`Behaviour`, then injected faults may
   turn the call into a 5xx (nothing recorded) or a hang (recorded, answered late);
4. records the outcome, atomically with the key check, so concurrent calls with one key
   charge once;
5. answers, after the slow or hang delay if the behaviour asks for one.

Recording before the delay is the point of the hang: the caller times out, yet a status
query finds the charge, exactly the in-doubt case paygate must reconcile.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from providers.sandbox.config import SandboxConfig
from providers.sandbox.errors import SandboxIdempotencyConflictError, SandboxUnavailableError
from providers.sandbox.ledger import Ledger
from providers.sandbox.records import ChargeRecord, SandboxChargeParams, SandboxStatus
from providers.sandbox.stats import SandboxStats, summarize
from providers.sandbox.test_accounts import Behaviour, Outcome, Timing, behaviour_for

log = logging.getLogger(__name__)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SandboxAcquirer:
    def __init__(
        self,
        ledger: Ledger,
        config: SandboxConfig | None = None,
        *,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.ledger = ledger
        self.config = config if config is not None else SandboxConfig()
        self._clock = clock
        self._random = random.Random(self.config.seed)

    async def start(self) -> None:
        await self.ledger.start()

    async def stop(self) -> None:
        await self.ledger.stop()

    async def charge(self, idempotency_key: str, params: SandboxChargeParams) -> ChargeRecord:
        """Charge once per key; raises the errors of :mod:`providers.sandbox.errors`."""
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
        if behaviour.outcome is Outcome.UNAVAILABLE or fail_roll < self.config.failure_rate:
            raise SandboxUnavailableError("the sandbox failed before processing the charge")
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
        return await self.ledger.get(idempotency_key)

    async def charges(self) -> list[ChargeRecord]:
        return await self.ledger.all()

    async def stats(self) -> SandboxStats:
        return summarize(await self.ledger.all())

    def _record(
        self,
        idempotency_key: str,
        request_hash: str,
        params: SandboxChargeParams,
        behaviour: Behaviour,
    ) -> ChargeRecord:
        declined = behaviour.outcome is Outcome.DECLINED
        return ChargeRecord(
            idempotency_key=idempotency_key,
            charge_id="ch_" + uuid.uuid4().hex,
            request_hash=request_hash,
            payment_reference=params.payment_reference,
            amount_minor=params.amount.minor_units,
            currency=params.amount.currency,
            payer_masked=params.payer.masked,
            status=SandboxStatus.DECLINED if declined else SandboxStatus.SUCCEEDED,
            error_code=behaviour.error_code,
            decline_code=behaviour.decline_code,
            created_at=self._clock(),
        )


def _replay(stored: ChargeRecord, request_hash: str) -> ChargeRecord:
    if stored.request_hash != request_hash:
        raise SandboxIdempotencyConflictError(
            "the idempotency key was already used with different parameters"
        )
    return stored


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)
