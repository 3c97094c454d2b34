"""What the three witnesses say after a run: the acquirer's ledger, the store, the results topic.

Each is read independently of the consumer's code paths (HTTP admin endpoints, plain SQL,
a plain Kafka reader), so a bug in the consumer cannot also hide itself from the checks.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from persistence.tables import outbox, payments
from schemas.payments import PaymentMessages

_IN_CHUNK = 500  # ids per IN (...) query: far below SQLite's bound on parameters
FINAL_STATUSES = frozenset({"succeeded", "failed"})


@dataclass(frozen=True, slots=True)
class LedgerEvidence:
    max_charges_per_reference: int
    double_charged_references: int
    succeeded_charges: Counter[str]  # payment reference (= payment id) -> succeeded charges
    declined: frozenset[str]  # references with a declined charge


async def read_ledger(sandbox_url: str, *, timeout_s: float = 60.0) -> LedgerEvidence:
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(base_url=sandbox_url, timeout=timeout) as session:
        async with session.get("/admin/stats") as response:
            response.raise_for_status()
            stats: dict[str, Any] = await response.json()
        async with session.get("/admin/charges") as response:
            response.raise_for_status()
            charges: list[dict[str, Any]] = (await response.json())["charges"]
    succeeded: Counter[str] = Counter()
    declined: set[str] = set()
    for charge in charges:
        reference = str(charge["paymentReference"])
        if charge["status"] == "succeeded":
            succeeded[reference] += 1
        else:
            declined.add(reference)
    return LedgerEvidence(
        max_charges_per_reference=int(stats["maxChargesPerReference"]),
        double_charged_references=int(stats["doubleChargedReferences"]),
        succeeded_charges=succeeded,
        declined=frozenset(declined),
    )


async def read_statuses(engine: AsyncEngine, payment_ids: Sequence[str]) -> dict[str, str]:
    """Status of each payment the store has, by id; ids it lacks are absent."""
    statuses: dict[str, str] = {}
    async with engine.connect() as conn:
        for chunk in _chunks(payment_ids):
            rows = await conn.execute(
                select(payments.c.id, payments.c.status).where(payments.c.id.in_(chunk))
            )
            statuses.update({row.id: row.status for row in rows})
    return statuses


async def count_final(engine: AsyncEngine, order_prefix: str) -> int:
    """Payments of one run (by order id prefix) in a final state; cheap enough to poll."""
    async with engine.connect() as conn:
        count = await conn.scalar(
            select(func.count())
            .select_from(payments)
            .where(payments.c.order_id.startswith(order_prefix, autoescape=True))
            .where(payments.c.status.in_(sorted(FINAL_STATUSES)))
        )
    return int(count or 0)


async def unpublished_outbox_rows(engine: AsyncEngine, topic: str) -> int:
    """Result events for ``topic`` not yet published (a shared store has other runs' rows)."""
    async with engine.connect() as conn:
        count = await conn.scalar(
            select(func.count())
            .select_from(outbox)
            .where(outbox.c.topic == topic)
            .where(outbox.c.published_at.is_(None))
        )
    return int(count or 0)


@dataclass(frozen=True, slots=True)
class ResultsEvidence:
    events: int
    # Extra copies: an eventId seen three times counts 2. Expected now and then (the relay
    # re-publishes after a crash between send and mark); readers dedupe by eventId.
    duplicate_events: int
    final_statuses: dict[str, frozenset[str]]  # payment id -> final statuses announced
    undecodable: int


async def read_results(
    bootstrap_servers: str, topic: str, partitions: int, *, timeout_s: float = 120.0
) -> ResultsEvidence:
    """Read ``topic`` from its beginning to its current end and decode every event."""
    messages = PaymentMessages.bundled()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        values: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while not await _at_end(consumer, end):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} to its end took over {timeout_s:.0f} s")
            for records in (await consumer.getmany(timeout_ms=500)).values():
                values.extend(r.value for r in records if r.value is not None)
    finally:
        await consumer.stop()
    return _summarize(values, messages)


async def _at_end(consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]) -> bool:
    for tp, offset in end.items():
        if await consumer.position(tp) < offset:
            return False
    return True


def _summarize(values: Iterable[bytes], messages: PaymentMessages) -> ResultsEvidence:
    event_ids: Counter[str] = Counter()
    finals: defaultdict[str, set[str]] = defaultdict(set)
    undecodable = 0
    for value in values:
        try:
            event = messages.decode_result(value)
        except Exception:  # any undecodable event is itself a finding, counted below
            undecodable += 1
            continue
        event_ids[event.event_id] += 1
        if event.status.value in FINAL_STATUSES:
            finals[event.payment_request_id].add(event.status.value)
    return ResultsEvidence(
        events=sum(event_ids.values()),
        duplicate_events=sum(count - 1 for count in event_ids.values()),
        final_statuses={pid: frozenset(s) for pid, s in finals.items()},
        undecodable=undecodable,
    )


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]
