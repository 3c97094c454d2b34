"""What an outage run measured: the store, the acquirer's ledger and the consumer's metrics.

Read independently of the consumer's code paths (plain SQL, the acquirer's admin endpoints,
the consumer's /metrics text), as the chaos run does.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from devtools.chaos.evidence import count_final, in_chunks
from domain.status import PaymentStatus
from persistence.tables import payments

# The reconciler's words (consumer/payment_reconciler.py) for an in-doubt attempt the provider never
# received: a call cut by the acquirer's SIGKILL before it recorded anything. Such a payment
# failed because its call was in flight at the kill, not because the retry budget ran out.
NEVER_RECEIVED = "the provider never received the payment; nothing was charged"

_POLL_S = 0.25


@dataclass(frozen=True, slots=True)
class Failure:
    payment_id: str
    code: str
    message: str

    @property
    def cut_at_the_kill(self) -> bool:
        return self.message == NEVER_RECEIVED


async def read_failures(engine: AsyncEngine, payment_ids: Sequence[str]) -> list[Failure]:
    failures: list[Failure] = []
    async with engine.connect() as conn:
        for chunk in in_chunks(payment_ids):
            rows = await conn.execute(
                select(payments.c.id, payments.c.error_code, payments.c.error_message)
                .where(payments.c.id.in_(chunk))
                .where(payments.c.status == PaymentStatus.FAILED.value)
            )
            failures += [
                Failure(row.id, str(row.error_code), str(row.error_message)) for row in rows
            ]
    return failures


async def last_final_write(engine: AsyncEngine, payment_ids: Sequence[str]) -> datetime | None:
    """When the last of ``payment_ids`` was written in a final state (the store's clock)."""
    final = [s.value for s in PaymentStatus if s.is_final]
    latest: datetime | None = None
    async with engine.connect() as conn:
        for chunk in in_chunks(payment_ids):
            found = await conn.scalar(
                select(func.max(payments.c.updated_at))
                .where(payments.c.id.in_(chunk))
                .where(payments.c.status.in_(final))
            )
            if found is not None:
                found = found if found.tzinfo else found.replace(tzinfo=UTC)  # SQLite: naive
                latest = found if latest is None or found > latest else latest
    return latest


@dataclass(frozen=True, slots=True)
class ConsumerCounts:
    """From the consumer's /metrics, scraped before it stops."""

    retries: int  # provider calls retried after a certainly-not-charged error
    circuit_opened: int  # transitions of the circuit to open (the probe's included)
    outcomes: dict[str, int]  # commands consumed, by outcome


async def scrape_consumer(url: str, *, timeout_s: float = 10.0) -> ConsumerCounts:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
        session.get(url) as response,
    ):
        response.raise_for_status()
        text = await response.text()
    retries = opened = 0.0
    outcomes: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "paygate_provider_retries_total":
                retries += sample.value
            elif sample.name == "paygate_provider_circuit_transitions_total":
                opened += sample.value if sample.labels.get("to") == "open" else 0
            elif sample.name == "paygate_commands_consumed_total":
                outcomes[sample.labels["outcome"]] += int(sample.value)
    return ConsumerCounts(int(retries), int(opened), dict(outcomes))


async def wait_all_final(
    engine: AsyncEngine, order_prefix: str, expected: int, timeout_s: float
) -> bool:
    """Wait (bounded) until ``expected`` payments of the run are final; False on timeout."""
    deadline = time.monotonic() + timeout_s
    while await count_final(engine, order_prefix) < expected:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(_POLL_S)
    return True
