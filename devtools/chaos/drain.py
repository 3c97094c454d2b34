"""After the feed: wait, bounded, until every payment and refund is final and every event is
published.

Payments and refunds left in doubt (a hang, a kill between the write-ahead commit and the provider's
answer) are resolved the way an operator would: ``paygate reconcile`` passes, which ask the
acquirer and never charge. The consumers' own reconcilers run too; both record the same
answer and the store keeps the first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from devtools.chaos.evidence import FINAL_PAYMENT_STATUSES, read_statuses, unpublished_outbox_rows
from devtools.chaos.refund_evidence import FINAL_REFUND_STATUSES, read_refund_statuses
from domain.status import PaymentStatus
from paygate.database import engine_for
from paygate.reconcile_command import reconcile_once
from paygate.settings import Settings

log = logging.getLogger("devtools.chaos")

_POLL_S = 1.0
_FINAL = frozenset(FINAL_PAYMENT_STATUSES)
_OUTBOX_TIMEOUT_S = 60.0


@dataclass
class DrainReport:
    seconds: float = 0.0
    timed_out: bool = False
    reconcile_passes: int = 0
    reconciled: Counter[str] = field(default_factory=Counter)
    outbox_left: int = 0


async def drain(
    settings: Settings,
    payment_ids: Sequence[str],
    timeout_s: float,
    refund_ids: Sequence[str] = (),
    authorizations: Sequence[str] = (),
) -> DrainReport:
    """Wait (bounded by ``timeout_s``) until every payment and refund is final and every
    event is published. ``authorizations``: payments created authorize-only, which are not
    final while ``authorized``: the acquirer's hold ends within the run, so each is
    captured, voided, failed or expired in the end."""
    held = frozenset(authorizations)
    report = DrainReport()
    started = time.monotonic()
    deadline = started + timeout_s
    engine = engine_for(settings)
    try:
        last_logged = started
        while True:
            statuses = await read_statuses(engine, payment_ids, raw=True)
            refunds = await read_refund_statuses(engine, refund_ids)
            # Raw statuses: a payment being captured or voided is not done, one voided or
            # expired is; one held is done only if it is not one of the run's
            # authorizations (whose holds end within the run).
            unsettled = [
                pid
                for pid in payment_ids
                if statuses.get(pid) not in _FINAL
                or (pid in held and statuses[pid] == PaymentStatus.AUTHORIZED.value)
            ]
            unsettled += [
                rid for rid in refund_ids if refunds.get(rid) not in FINAL_REFUND_STATUSES
            ]
            if not unsettled:
                break
            stored = statuses.keys() | refunds.keys()
            left = len(unsettled)
            if time.monotonic() > deadline:
                report.timed_out = True
                log.error("drain: %d commands still not final after %.0f s", left, timeout_s)
                break
            if any(cid in stored for cid in unsettled):
                # Some are in the store but not final: in doubt. Ask the acquirer.
                await _reconcile(settings, report)
            if time.monotonic() - last_logged >= 10:
                last_logged = time.monotonic()
                missing = sum(1 for cid in unsettled if cid not in stored)
                log.info("drain: %d not final yet (%d not in the store)", left, missing)
            await asyncio.sleep(_POLL_S)
        report.outbox_left = await _wait_outbox_empty(engine, settings.results_topic)
    finally:
        await engine.dispose()
    report.seconds = time.monotonic() - started
    return report


async def _reconcile(settings: Settings, report: DrainReport) -> None:
    try:
        report.reconciled.update(await reconcile_once(settings))
    except Exception:  # one failed pass (a locked database, say) is retried next poll
        log.exception("drain: a reconciliation pass failed")
    report.reconcile_passes += 1


async def _wait_outbox_empty(engine: AsyncEngine, topic: str) -> int:
    """Wait (bounded) until the consumers' relays published every outbox row."""
    deadline = time.monotonic() + _OUTBOX_TIMEOUT_S
    while True:
        left = await unpublished_outbox_rows(engine, topic)
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(_POLL_S / 4)
