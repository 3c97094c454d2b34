"""What the three witnesses say after a run: the acquirer's ledger, the store, the results topic.

Payments here; the refunds' side of the store in :mod:`devtools.chaos.refund_evidence`.

Each is read independently of the consumer's code paths (HTTP admin endpoints, plain SQL,
a plain Kafka reader), so a bug in the consumer cannot also hide itself from the checks.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.events import PaymentResult
from domain.status import PaymentStatus
from persistence.tables import outbox, payments
from schemas.payments import PaymentMessages

_IN_CHUNK = 500  # ids per IN (...) query: far below SQLite's bound on parameters
# Final outcomes of a charge. A refunded payment's charge succeeded: the store's
# partially_refunded and refunded count as succeeded here (PaymentStatus.charge_outcome).
FINAL_STATUSES = frozenset({"succeeded", "failed"})
# What a payment that does not finish at once (a payer action, an authorization) may end
# as, besides those: still held, voided, or expired. Its charge outcome is "authorized"
# while a capture or void is under way, so these are judged on the raw status too
# (devtools/chaos/lifecycle_verdict.py).
LIFECYCLE_FINAL_STATUSES = FINAL_STATUSES | {"authorized", "canceled", "expired"}
FINAL_PAYMENT_STATUSES = sorted(s.value for s in PaymentStatus if s.is_final)


@dataclass(frozen=True, slots=True)
class LedgerRefund:
    """One refund row of the acquirer's ledger (``GET /admin/refunds``)."""

    key: str  # the idempotency key the acquirer was called with
    reference: str  # paygate's refund id
    charge_id: str
    payment_reference: str
    amount_minor: int
    status: str  # succeeded, pending or failed

    @property
    def holds_money(self) -> bool:
        """Returned, or still to be: counts against what the charge captured."""
        return self.status != "failed"


@dataclass(frozen=True, slots=True)
class LedgerCharge:
    """One charge row of the acquirer's ledger (``GET /admin/charges``), whatever its status."""

    charge_id: str
    key: str  # the attempt key it was made under
    status: str  # succeeded, authorized, declined, requires_action, canceled, expired
    amount_minor: int
    captured_minor: int
    capture_key: str | None  # the key of the capture that took it (None: none did)


@dataclass(frozen=True, slots=True)
class LedgerEvidence:
    max_charges_per_reference: int
    double_charged_references: int
    succeeded_charges: Counter[str]  # payment reference (= payment id) -> succeeded charges
    declined: frozenset[str]  # references with a declined charge
    refunds: tuple[LedgerRefund, ...] = ()
    captured: dict[str, int] = field(default_factory=dict)  # charge id -> captured minor
    # payment reference -> the idempotency (attempt) keys of its succeeded charges
    charged_keys: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # succeeded charge id -> its payment reference
    charge_references: dict[str, str] = field(default_factory=dict)
    # payment reference -> every charge row made for it, in ledger order
    charges: dict[str, tuple[LedgerCharge, ...]] = field(default_factory=dict)


async def read_ledger(sandbox_url: str, *, timeout_s: float = 60.0) -> LedgerEvidence:
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(base_url=sandbox_url, timeout=timeout) as session:
        async with session.get("/admin/stats") as response:
            response.raise_for_status()
            stats: dict[str, Any] = await response.json()
        async with session.get("/admin/charges") as response:
            response.raise_for_status()
            charges: list[dict[str, Any]] = (await response.json())["charges"]
        async with session.get("/admin/refunds") as response:
            response.raise_for_status()
            refunds: list[dict[str, Any]] = (await response.json())["refunds"]
    succeeded: Counter[str] = Counter()
    declined: set[str] = set()
    captured: dict[str, int] = {}
    keys: defaultdict[str, list[str]] = defaultdict(list)
    references: dict[str, str] = {}
    rows: defaultdict[str, list[LedgerCharge]] = defaultdict(list)
    for charge in charges:
        reference = str(charge["paymentReference"])
        rows[reference].append(
            LedgerCharge(
                charge_id=str(charge["id"]),
                key=str(charge["idempotencyKey"]),
                status=str(charge["status"]),
                amount_minor=int(charge["amountMinor"]),
                captured_minor=int(charge["capturedMinor"] or 0),
                capture_key=None if charge["captureKey"] is None else str(charge["captureKey"]),
            )
        )
        if charge["status"] == "succeeded":
            succeeded[reference] += 1
            captured[str(charge["id"])] = int(charge["capturedMinor"] or 0)
            keys[reference].append(str(charge["idempotencyKey"]))
            references[str(charge["id"])] = reference
        elif charge["status"] == "declined":
            # Held, released or waiting for its payer is neither: see ``charges``.
            declined.add(reference)
    return LedgerEvidence(
        max_charges_per_reference=int(stats["maxChargesPerReference"]),
        double_charged_references=int(stats["doubleChargedReferences"]),
        succeeded_charges=succeeded,
        declined=frozenset(declined),
        refunds=tuple(
            LedgerRefund(
                key=str(row["idempotencyKey"]),
                reference=str(row["refundReference"]),
                charge_id=str(row["chargeId"]),
                payment_reference=str(row["paymentReference"]),
                amount_minor=int(row["amountMinor"]),
                status=str(row["status"]),
            )
            for row in refunds
        ),
        captured=captured,
        charged_keys={reference: tuple(sorted(k)) for reference, k in keys.items()},
        charge_references=references,
        charges={reference: tuple(found) for reference, found in rows.items()},
    )


async def read_statuses(
    engine: AsyncEngine, payment_ids: Sequence[str], *, raw: bool = False
) -> dict[str, str]:
    """The charge outcome of each payment the store has, by id; ids it lacks are absent.

    ``succeeded`` for a payment refunded since (see :data:`FINAL_STATUSES`). ``raw``: the
    status as stored instead (``capturing`` stays ``capturing``).
    """
    statuses: dict[str, str] = {}
    async with engine.connect() as conn:
        for chunk in in_chunks(payment_ids):
            rows = await conn.execute(
                select(payments.c.id, payments.c.status).where(payments.c.id.in_(chunk))
            )
            statuses.update(
                {
                    row.id: row.status if raw else PaymentStatus(row.status).charge_outcome.value
                    for row in rows
                }
            )
    return statuses


async def count_final(engine: AsyncEngine, order_prefix: str, *, waiting: bool = False) -> int:
    """Payments of one run (by order id prefix) in a final state; cheap enough to poll.

    ``waiting``: payments waiting for their payer count too. No worker has anything to do
    for them, so a group whose payments are all final or waiting is idle.
    """
    statuses = FINAL_PAYMENT_STATUSES + ([PaymentStatus.REQUIRES_ACTION.value] if waiting else [])
    async with engine.connect() as conn:
        count = await conn.scalar(
            select(func.count())
            .select_from(payments)
            .where(payments.c.order_id.startswith(order_prefix, autoescape=True))
            .where(payments.c.status.in_(statuses))
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
class RefundEventSeen:
    """What one RefundResult event said, in the order the topic holds them."""

    status: str
    amount_minor: int | None
    error_code: str | None
    payment_status: str | None  # the payment's status when the event was made


@dataclass(frozen=True, slots=True)
class PaymentEventSeen:
    """What one PaymentResult event said: the payment's status when it was made, and the
    error it carried (a refused capture or cancel says why, with the status it found)."""

    status: str
    error_code: str | None


@dataclass(frozen=True, slots=True)
class ResultsEvidence:
    events: int
    # Extra copies: an eventId seen three times counts 2. Expected now and then (the relay
    # re-publishes after a crash between send and mark); readers dedupe by eventId.
    duplicate_events: int
    final_statuses: dict[str, frozenset[str]]  # payment id -> final statuses announced
    undecodable: int
    # refund id -> its events, duplicates included, in topic order (one order's events
    # share a key, hence a partition, hence an order)
    refund_events: dict[str, list[RefundEventSeen]] = field(default_factory=dict)
    # payment id -> its events, duplicates included, in topic order
    payment_events: dict[str, list[PaymentEventSeen]] = field(default_factory=dict)


async def read_results(
    kafka: Mapping[str, object], topic: str, partitions: int, *, timeout_s: float = 120.0
) -> ResultsEvidence:
    """Read ``topic`` from its beginning to its current end and decode every event."""
    messages = PaymentMessages.bundled()
    consumer = AIOKafkaConsumer(
        **kafka,
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
    return summarize_results(values, messages)


async def _at_end(consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]) -> bool:
    for tp, offset in end.items():
        if await consumer.position(tp) < offset:
            return False
    return True


def summarize_results(values: Iterable[bytes], messages: PaymentMessages) -> ResultsEvidence:
    """Decode every event of either kind; what does not decode is counted, not skipped."""
    event_ids: Counter[str] = Counter()
    finals: defaultdict[str, set[str]] = defaultdict(set)
    refund_events: defaultdict[str, list[RefundEventSeen]] = defaultdict(list)
    payment_events: defaultdict[str, list[PaymentEventSeen]] = defaultdict(list)
    undecodable = 0
    for value in values:
        try:
            event = messages.decode_any_result(value)
        except Exception:  # any undecodable event is itself a finding, counted below
            undecodable += 1
            continue
        event_ids[event.event_id] += 1
        if isinstance(event, PaymentResult):
            error = None if event.error is None else event.error.code.value
            payment_events[event.payment_request_id].append(
                PaymentEventSeen(event.status.value, error)
            )
            # A refusal answers another command under this id: no status of the payment.
            if event.status.value in FINAL_STATUSES and not event.refusal:
                finals[event.payment_request_id].add(event.status.value)
            continue
        refund_events[event.refund_id].append(
            RefundEventSeen(
                status=event.status.value,
                amount_minor=event.amount_minor,
                error_code=None if event.error is None else event.error.code.value,
                payment_status=None if event.payment_status is None else event.payment_status.value,
            )
        )
    return ResultsEvidence(
        events=sum(event_ids.values()),
        duplicate_events=sum(count - 1 for count in event_ids.values()),
        final_statuses={pid: frozenset(s) for pid, s in finals.items()},
        undecodable=undecodable,
        refund_events=dict(refund_events),
        payment_events=dict(payment_events),
    )


def in_chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    """``items`` in slices small enough for one ``IN (...)`` each."""
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]
