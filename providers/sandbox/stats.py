"""Counts over the ledger that chaos runs assert on (0 double charges, 0 lost payments)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from providers.sandbox.records import ChargeRecord, SandboxStatus


@dataclass(frozen=True, slots=True)
class SandboxStats:
    charges: int  # rows: succeeded, authorized, declined, and waiting for or expired unpaid
    succeeded: int
    declined: int
    authorized: int  # authorized, not captured yet
    # Keys stored more than once. The primary key makes it 0; reported so that an
    # assertion states the invariant rather than assuming it.
    duplicate_keys: int
    # Succeeded or authorized charges of the payment reference charged most often: above 1
    # is a double charge (or a double hold). Declines do not count: a retry after a decline
    # may rightly succeed.
    max_charges_per_reference: int
    double_charged_references: int

    def to_json(self) -> dict[str, int]:
        return {
            "charges": self.charges,
            "succeeded": self.succeeded,
            "declined": self.declined,
            "authorized": self.authorized,
            "duplicateKeys": self.duplicate_keys,
            "maxChargesPerReference": self.max_charges_per_reference,
            "doubleChargedReferences": self.double_charged_references,
        }


def summarize(records: Iterable[ChargeRecord]) -> SandboxStats:
    rows = list(records)
    per_key = Counter(row.idempotency_key for row in rows)
    per_status = Counter(row.status for row in rows)
    per_reference = Counter(
        # Only charges that hold or took money: one waiting for its payer, or expired
        # unpaid, has taken nothing.
        row.payment_reference
        for row in rows
        if row.status in (SandboxStatus.SUCCEEDED, SandboxStatus.AUTHORIZED)
    )
    return SandboxStats(
        charges=len(rows),
        succeeded=per_status[SandboxStatus.SUCCEEDED],
        declined=per_status[SandboxStatus.DECLINED],
        authorized=per_status[SandboxStatus.AUTHORIZED],
        duplicate_keys=sum(1 for count in per_key.values() if count > 1),
        max_charges_per_reference=max(per_reference.values(), default=0),
        double_charged_references=sum(1 for count in per_reference.values() if count > 1),
    )
