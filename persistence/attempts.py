"""Provider attempts: their keys, their statuses, and the latest one of a payment.

An attempt is one provider (and one idempotency key) for a payment, written before the call
(write-ahead). Retries at that provider reuse its key; only failover to another provider
opens the next attempt (see persistence.payment_claims.open_next_attempt).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from persistence.tables import provider_attempts

ATTEMPT_STARTED = "started"
ATTEMPT_SUCCEEDED = "succeeded"
ATTEMPT_DECLINED = "declined"
ATTEMPT_FAILED = "failed"
ATTEMPT_UNKNOWN = "unknown"
# The provider waits for the payer: like unknown, the attempt stays open until the provider
# says how it ended.
ATTEMPT_REQUIRES_ACTION = "requires_action"
OPEN_ATTEMPT_STATUSES = frozenset({ATTEMPT_UNKNOWN, ATTEMPT_REQUIRES_ACTION})


def attempt_key_for(payment_id: str, attempt_no: int) -> str:
    """Deterministic, so the provider's idempotency key for an attempt can be re-derived."""
    return f"{payment_id}-a{attempt_no}"


def attempt_number(attempt_key: str) -> int:
    """The n of an attempt key made by :func:`attempt_key_for`."""
    return int(attempt_key.rsplit("-a", 1)[1])


def payment_of_attempt(attempt_key: str) -> str:
    """The payment id in an attempt key made by :func:`attempt_key_for`."""
    return attempt_key.rsplit("-a", 1)[0]


async def latest_attempt(conn: AsyncConnection, payment_id: str) -> Any:
    """The payment's latest attempt row (None if it has none): the only one that may be
    open."""
    return (
        await conn.execute(
            select(provider_attempts)
            .where(provider_attempts.c.payment_id == payment_id)
            .order_by(provider_attempts.c.attempt_no.desc())
            .limit(1)
        )
    ).one_or_none()
