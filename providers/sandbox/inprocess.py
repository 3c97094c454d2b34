"""The sandbox as a :class:`providers.port.PaymentProvider` without a network in between.

For unit tests and benchmarks that need the acquirer's behaviours but not HTTP. It answers
exactly as :class:`providers.sandbox.adapter.SandboxHttpProvider` does for the same
behaviour, a hang included: the call gives up after ``call_timeout_s`` with
:class:`ProviderTimeoutError` while the charge stays in the ledger. Refunds, captures and
status queries answer as the HTTP adapter does too, refusals as the same PaygateErrors.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

from domain.errors import ErrorCode, PaygateError
from providers.errors import ProviderTimeoutError, ProviderUnavailableError
from providers.port import (
    CancelRequest,
    CaptureRequest,
    ChargeOutcome,
    ChargeRequest,
    RefundOutcome,
    RefundRequest,
)
from providers.retry_after import parse_retry_after
from providers.sandbox.acquirer import SandboxAcquirer
from providers.sandbox.config import SandboxConfig
from providers.sandbox.errors import (
    SandboxIdempotencyConflictError,
    SandboxRefusedError,
    SandboxUnavailableError,
)
from providers.sandbox.ledger import MemoryLedger
from providers.sandbox.transformers import (
    PROVIDER_NAME,
    capture_params,
    charge_params,
    outcome_from_record,
    refund_outcome_from_record,
    refund_params,
)


class InProcessSandboxProvider:
    def __init__(
        self,
        acquirer: SandboxAcquirer | None = None,
        *,
        config: SandboxConfig | None = None,
        call_timeout_s: float = 10.0,
        name: str = PROVIDER_NAME,
    ) -> None:
        # Another name (sandbox-2, ...) tells a second acquirer apart in routes and attempts.
        self._name = name
        if acquirer is not None and config is not None:
            raise ValueError("pass either an acquirer or a config, not both")
        self.acquirer = (
            acquirer if acquirer is not None else SandboxAcquirer(MemoryLedger(), config)
        )
        self._call_timeout_s = call_timeout_s

    @property
    def name(self) -> str:
        return self._name

    @property
    def idempotency_window(self) -> timedelta | None:
        # Same acquirer and ledger as over HTTP: keys are never pruned.
        return None

    @property
    def status_search_lag(self) -> timedelta:
        # Same ledger as over HTTP: the status is the charge's own row.
        return timedelta(0)

    @property
    def refund_status_lag(self) -> timedelta:
        # Same ledger as over HTTP: the status is the refund's own row.
        return timedelta(0)

    async def start(self) -> None:
        await self.acquirer.start()

    async def stop(self) -> None:
        await self.acquirer.stop()

    async def __aenter__(self) -> InProcessSandboxProvider:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        async with self._translated():
            record = await self.acquirer.charge(request.attempt_key, charge_params(request))
        return outcome_from_record(record)

    async def charge_status(self, attempt_key: str) -> ChargeOutcome | None:
        record = await self.acquirer.status(attempt_key)
        return None if record is None else outcome_from_record(record)

    async def charge_by_reference(self, provider_reference: str) -> ChargeOutcome | None:
        record = await self.acquirer.charge_by_id(provider_reference)
        if record is None:
            return None
        refunded = await self.acquirer.refunded_of(record.charge_id)
        return outcome_from_record(record, refunded_minor=refunded)

    async def capture(self, request: CaptureRequest) -> ChargeOutcome:
        async with self._translated():
            record = await self.acquirer.capture(request.capture_key, capture_params(request))
        return outcome_from_record(record)

    async def close_charge(self, attempt_key: str) -> ChargeOutcome | None:
        record = await self.acquirer.close(attempt_key)
        return None if record is None else outcome_from_record(record)

    async def cancel(self, request: CancelRequest) -> ChargeOutcome:
        async with self._translated():
            record = await self.acquirer.cancel(request.charge_reference)
        return outcome_from_record(record)

    async def refund(self, request: RefundRequest) -> RefundOutcome:
        async with self._translated():
            record = await self.acquirer.refund(request.refund_key, refund_params(request))
        return refund_outcome_from_record(record)

    async def refund_status(self, refund_key: str, charge_reference: str) -> RefundOutcome | None:
        # Found by key alone, as the HTTP service does.
        record = await self.acquirer.refund_status(refund_key)
        return None if record is None else refund_outcome_from_record(record)

    @contextlib.asynccontextmanager
    async def _translated(self) -> AsyncIterator[None]:
        """The call under ``call_timeout_s``, the acquirer's errors as the adapter's."""
        try:
            async with asyncio.timeout(self._call_timeout_s):
                yield
        except TimeoutError as exc:
            raise ProviderTimeoutError(
                PROVIDER_NAME, f"no answer within {self._call_timeout_s:g} s; outcome unknown"
            ) from exc
        except SandboxUnavailableError as exc:
            unavailable = ProviderUnavailableError(PROVIDER_NAME, str(exc))
            unavailable.retry_after = parse_retry_after(exc.retry_after)
            raise unavailable from exc
        except SandboxIdempotencyConflictError as exc:
            raise PaygateError(ErrorCode.IDEMPOTENCY_CONFLICT, str(exc)) from exc
        except SandboxRefusedError as exc:
            raise PaygateError(exc.code, exc.message, param=exc.param) from exc
