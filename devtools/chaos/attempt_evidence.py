"""What the store says about a run's provider attempts, read with plain SQL.

Two workers on one payment leave a trace here even when the payment's own row looks
right: the loser's attempt stays open (``started``, never finished) beside the winner's
outcome, and a second charge at the acquirer has no attempt that finished with it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from devtools.chaos.evidence import FINAL_PAYMENT_STATUSES, in_chunks
from domain.status import CAPTURED
from persistence.tables import payments, provider_attempts

_CAPTURED = sorted(status.value for status in CAPTURED)


@dataclass(frozen=True, slots=True)
class StoreAttempts:
    # payment id -> "<attempt key> (<status>)" of each attempt never finished although the
    # payment is final: an attempt nobody will ever resolve
    open_on_final: dict[str, list[str]]
    # payment id -> its provider reference (the charge id), for payments whose charge
    # succeeded in the store
    charge_references: dict[str, str | None]


async def read_store_attempts(engine: AsyncEngine, payment_ids: Sequence[str]) -> StoreAttempts:
    open_on_final: defaultdict[str, list[str]] = defaultdict(list)
    references: dict[str, str | None] = {}
    async with engine.connect() as conn:
        for chunk in in_chunks(payment_ids):
            for row in await conn.execute(
                select(
                    provider_attempts.c.payment_id,
                    provider_attempts.c.attempt_key,
                    provider_attempts.c.status,
                )
                .join(payments, payments.c.id == provider_attempts.c.payment_id)
                .where(provider_attempts.c.payment_id.in_(chunk))
                .where(provider_attempts.c.finished_at.is_(None))
                .where(payments.c.status.in_(FINAL_PAYMENT_STATUSES))
                .order_by(provider_attempts.c.attempt_key)
            ):
                open_on_final[row.payment_id].append(f"{row.attempt_key} ({row.status})")
            for payment in await conn.execute(
                select(payments.c.id, payments.c.provider_reference)
                .where(payments.c.id.in_(chunk))
                .where(payments.c.status.in_(_CAPTURED))
            ):
                references[payment.id] = payment.provider_reference
    return StoreAttempts(dict(open_on_final), references)
