"""The sandbox's ledger: every charge it made, authorized or declined, one row per
idempotency key, and every refund, one row per refund key.

The ledger is what chaos runs count, so inserting is atomic with the key check: the first
row stored under a key wins and every other writer gets that row back to replay. A refund's
insert is atomic with the check of what remains of its charge too, so concurrent refunds
cannot return more than was captured. :class:`MemoryLedger` serves in-process use;
:class:`providers.sandbox.sqlite_ledger.SqliteLedger` survives restarts and can be shared
by several processes.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from providers.sandbox.records import ChargeRecord, SandboxErrorCode, SandboxStatus
from providers.sandbox.refund_records import RefundRecord, SandboxRefundStatus


@dataclasses.dataclass(frozen=True, slots=True)
class ActionOutcome:
    """How a charge waiting for its payer ends: approved (its ``after_action`` status, with
    what it captured), declined (with the decline), or expired."""

    status: SandboxStatus
    captured_minor: int = 0
    error_code: SandboxErrorCode | None = None
    decline_code: str | None = None


class Ledger(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Release resources; safe to call twice."""
        ...

    async def get(self, idempotency_key: str) -> ChargeRecord | None: ...

    async def get_by_charge_id(self, charge_id: str) -> ChargeRecord | None: ...

    async def insert_if_absent(self, record: ChargeRecord) -> ChargeRecord:
        """Store ``record`` unless its key is taken; return the row now stored under the key.

        The caller compares the returned row's ``charge_id`` with its own to know whether
        it won.
        """
        ...

    async def all(self) -> list[ChargeRecord]:
        """Every charge row, oldest first."""
        ...

    async def capture(
        self, charge_id: str, capture_key: str, amount_minor: int
    ) -> ChargeRecord | None:
        """Capture the charge if it is still authorized; return its row as it now is (None
        if unknown). The caller reads ``capture_key`` on the row to know whether it won."""
        ...

    async def finish_action(self, charge_id: str, outcome: ActionOutcome) -> ChargeRecord | None:
        """End the payer's action of a ``requires_action`` charge with ``outcome``, if it is
        still waiting; return its row as it now is (None if unknown). Of two endings (the
        payer's completion and a close) the first wins: the caller reads the row's status."""
        ...

    async def release(self, charge_id: str, status: SandboxStatus) -> ChargeRecord | None:
        """Release the charge's hold (``canceled`` or ``expired``) if it is still authorized;
        return its row as it now is (None if unknown)."""
        ...

    async def get_refund(self, idempotency_key: str) -> RefundRecord | None: ...

    async def insert_refund_if_absent(
        self, record: RefundRecord, limit_minor: int
    ) -> RefundRecord | None:
        """Store ``record`` unless its key is taken, and only if it and the charge's refunds
        that hold money stay within ``limit_minor``; return the row stored under the key,
        or None when the new row would exceed the limit (nothing stored)."""
        ...

    async def settle_refund(self, idempotency_key: str) -> RefundRecord | None:
        """Turn a pending refund succeeded; return the row as it now is."""
        ...

    async def refunds(self) -> list[RefundRecord]:
        """Every refund row, oldest first."""
        ...


def refunded_minor(refunds: list[RefundRecord], charge_id: str) -> int:
    """What the charge's refunds return or still may (succeeded and pending)."""
    return sum(
        row.amount_minor for row in refunds if row.charge_id == charge_id and row.status.holds_money
    )


class MemoryLedger:
    """Dicts. Every check and its write run without an ``await`` between them, hence
    atomically on the event loop."""

    def __init__(self) -> None:
        self._rows: dict[str, ChargeRecord] = {}
        self._key_by_charge_id: dict[str, str] = {}
        self._refunds: dict[str, RefundRecord] = {}

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def get(self, idempotency_key: str) -> ChargeRecord | None:
        return self._rows.get(idempotency_key)

    async def get_by_charge_id(self, charge_id: str) -> ChargeRecord | None:
        key = self._key_by_charge_id.get(charge_id)
        return None if key is None else self._rows[key]

    async def insert_if_absent(self, record: ChargeRecord) -> ChargeRecord:
        stored = self._rows.setdefault(record.idempotency_key, record)
        self._key_by_charge_id.setdefault(stored.charge_id, stored.idempotency_key)
        return stored

    async def all(self) -> list[ChargeRecord]:
        return list(self._rows.values())

    async def capture(
        self, charge_id: str, capture_key: str, amount_minor: int
    ) -> ChargeRecord | None:
        key = self._key_by_charge_id.get(charge_id)
        if key is None:
            return None
        row = self._rows[key]
        if row.status is SandboxStatus.AUTHORIZED:
            row = dataclasses.replace(
                row,
                status=SandboxStatus.SUCCEEDED,
                captured_minor=amount_minor,
                capture_key=capture_key,
            )
            self._rows[key] = row
        return row

    async def finish_action(self, charge_id: str, outcome: ActionOutcome) -> ChargeRecord | None:
        key = self._key_by_charge_id.get(charge_id)
        if key is None:
            return None
        row = self._rows[key]
        if row.status is SandboxStatus.REQUIRES_ACTION:
            row = dataclasses.replace(
                row,
                status=outcome.status,
                captured_minor=outcome.captured_minor,
                error_code=outcome.error_code,
                decline_code=outcome.decline_code,
            )
            self._rows[key] = row
        return row

    async def release(self, charge_id: str, status: SandboxStatus) -> ChargeRecord | None:
        key = self._key_by_charge_id.get(charge_id)
        if key is None:
            return None
        row = self._rows[key]
        if row.status is SandboxStatus.AUTHORIZED:
            row = dataclasses.replace(row, status=status)
            self._rows[key] = row
        return row

    async def get_refund(self, idempotency_key: str) -> RefundRecord | None:
        return self._refunds.get(idempotency_key)

    async def insert_refund_if_absent(
        self, record: RefundRecord, limit_minor: int
    ) -> RefundRecord | None:
        stored = self._refunds.get(record.idempotency_key)
        if stored is not None:
            return stored
        taken = refunded_minor(list(self._refunds.values()), record.charge_id)
        if taken + record.amount_minor > limit_minor:
            return None
        self._refunds[record.idempotency_key] = record
        return record

    async def settle_refund(self, idempotency_key: str) -> RefundRecord | None:
        row = self._refunds.get(idempotency_key)
        if row is not None and row.status is SandboxRefundStatus.PENDING:
            row = dataclasses.replace(row, status=SandboxRefundStatus.SUCCEEDED)
            self._refunds[idempotency_key] = row
        return row

    async def refunds(self) -> list[RefundRecord]:
        return list(self._refunds.values())
