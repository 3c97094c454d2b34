"""What the store says about a run's refunds: each refund row, and each payment's totals.

Plain SQL over the ``refunds`` and ``payments`` tables, as :mod:`devtools.chaos.evidence`
reads payments: nothing of the consumer's code stands between the rows and the checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from devtools.chaos.evidence import in_chunks
from persistence.tables import payments, refunds, stray_charges

FINAL_REFUND_STATUSES = frozenset({"succeeded", "failed"})


@dataclass(frozen=True, slots=True)
class StoredRefund:
    refund_id: str
    payment_id: str
    status: str
    amount_minor: int | None
    error_code: str | None


@dataclass(frozen=True, slots=True)
class StoredPayment:
    """A payment's status and refund totals as the store has them at the end."""

    status: str
    amount_minor: int
    refunded_minor: int
    refund_reserved_minor: int
    # Of ``refunded_minor``, what the provider reported refunded outside paygate (no refund
    # row: domain.provider_refunds).
    refunded_outside_minor: int = 0
    # What the capture took (None: the whole amount), the ceiling of the refunds.
    captured_minor: int | None = None

    @property
    def refund_ceiling_minor(self) -> int:
        return self.amount_minor if self.captured_minor is None else self.captured_minor


@dataclass(frozen=True, slots=True)
class StoreRefunds:
    refunds: dict[str, StoredRefund]  # every refund of the given payments, by refund id
    payments: dict[str, StoredPayment]  # the given payments the store has
    # The attempt keys of the given payments' stray charges (``stray_charges``): the
    # reversal refunds made of them are paygate's own, not refunds made outside it.
    stray_attempt_keys: frozenset[str] = frozenset()
    # The charges the given payments stand on (``payments.provider_reference``): a refund of
    # one is never a stray charge's reversal, whatever its key and the stray-charge ledger.
    own_charge_references: frozenset[str] = frozenset()


async def read_refund_statuses(engine: AsyncEngine, refund_ids: Sequence[str]) -> dict[str, str]:
    """Status of each refund the store has, by id; cheap enough to poll while draining."""
    statuses: dict[str, str] = {}
    async with engine.connect() as conn:
        for chunk in in_chunks(refund_ids):
            rows = await conn.execute(
                select(refunds.c.id, refunds.c.status).where(refunds.c.id.in_(chunk))
            )
            statuses.update({row.id: row.status for row in rows})
    return statuses


async def read_store_refunds(engine: AsyncEngine, payment_ids: Sequence[str]) -> StoreRefunds:
    """Every refund row of ``payment_ids`` (fed or not), those payments' totals, the
    attempt keys of their stray charges and the charges they stand on."""
    found: dict[str, StoredRefund] = {}
    totals: dict[str, StoredPayment] = {}
    strays: set[str] = set()
    own: set[str] = set()
    async with engine.connect() as conn:
        for chunk in in_chunks(payment_ids):
            for row in await conn.execute(
                select(
                    refunds.c.id,
                    refunds.c.payment_id,
                    refunds.c.status,
                    refunds.c.amount_minor,
                    refunds.c.error_code,
                ).where(refunds.c.payment_id.in_(chunk))
            ):
                found[row.id] = StoredRefund(
                    row.id, row.payment_id, row.status, row.amount_minor, row.error_code
                )
            for paid in await conn.execute(
                select(
                    payments.c.id,
                    payments.c.status,
                    payments.c.amount_minor,
                    payments.c.refunded_minor,
                    payments.c.refund_reserved_minor,
                    payments.c.refunded_outside_minor,
                    payments.c.captured_minor,
                    payments.c.provider_reference,
                ).where(payments.c.id.in_(chunk))
            ):
                if paid.provider_reference is not None:
                    own.add(paid.provider_reference)
                totals[paid.id] = StoredPayment(
                    paid.status,
                    paid.amount_minor,
                    paid.refunded_minor,
                    paid.refund_reserved_minor,
                    paid.refunded_outside_minor,
                    paid.captured_minor,
                )
            strays.update(
                (
                    await conn.execute(
                        select(stray_charges.c.attempt_key).where(
                            stray_charges.c.payment_id.in_(chunk)
                        )
                    )
                ).scalars()
            )
    return StoreRefunds(found, totals, frozenset(strays), frozenset(own))
