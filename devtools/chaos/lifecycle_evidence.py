"""What the store says about the payments that do not finish at once, read with plain SQL.

The raw status, not the charge outcome the other checks read: a payment being captured or
voided has an authorized charge, yet it is not done, and ``canceled`` and ``expired`` are
outcomes of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from devtools.chaos.evidence import in_chunks
from persistence.tables import payments


@dataclass(frozen=True, slots=True)
class StoredLifecycle:
    status: str  # as stored: authorized, capturing, canceled, requires_action, ...
    amount_minor: int  # authorized (or asked)
    captured_minor: int | None  # what a capture took (None: no capture made or under way)
    provider_reference: str | None  # the charge id
    error_code: str | None


async def read_lifecycle(
    engine: AsyncEngine, payment_ids: Sequence[str]
) -> dict[str, StoredLifecycle]:
    """The row of each of ``payment_ids`` the store has, by id."""
    found: dict[str, StoredLifecycle] = {}
    async with engine.connect() as conn:
        for chunk in in_chunks(payment_ids):
            for row in await conn.execute(
                select(
                    payments.c.id,
                    payments.c.status,
                    payments.c.amount_minor,
                    payments.c.captured_minor,
                    payments.c.provider_reference,
                    payments.c.error_code,
                ).where(payments.c.id.in_(chunk))
            ):
                found[row.id] = StoredLifecycle(
                    row.status,
                    row.amount_minor,
                    row.captured_minor,
                    row.provider_reference,
                    row.error_code,
                )
    return found
