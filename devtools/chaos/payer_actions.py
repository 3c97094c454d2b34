"""The payers of a chaos run's ``requires_action`` payments, played by the harness.

A payer learns where to act the way a real one does: from paygate, which stores the
acquirer's next action with the payment (the URL a REST client would redirect the payer
to). The harness reads it from the store (plain SQL), waits its planned delay, and then
completes or denies the action at that URL, the acquirer's own page
(``POST <url>/complete``), exactly as a payer's browser would end a 3-D Secure challenge.
A payer who abandons never goes there; a late one goes only after the action expired, and
the acquirer must refuse. Whatever the acquirer answers is recorded (:class:`PayerAct`):
the verdict judges each payment by what its payer actually managed to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import aiohttp
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from devtools.chaos.evidence import in_chunks
from devtools.chaos.lifecycle_plan import PayerMove, PlannedAction
from domain.clock import utc_now
from domain.status import PaymentStatus
from persistence.engine import as_utc
from persistence.tables import payments

log = logging.getLogger("devtools.chaos")

_POLL_S = 0.5


@dataclass(frozen=True, slots=True)
class PayerAct:
    """What one payer did and what the acquirer answered (``answer``: the HTTP status;
    ``code``: the error code of a refusal)."""

    move: PayerMove
    answer: int
    code: str | None = None

    @property
    def accepted(self) -> bool:
        return self.answer == 200


@dataclass(frozen=True, slots=True)
class _Shown:
    target: str
    expires_at: datetime


@dataclass
class Payers:
    """Act for every planned payer once paygate shows its action; run until stopped."""

    engine: AsyncEngine
    planned: Mapping[str, PlannedAction]
    acts: dict[str, PayerAct] = field(default_factory=dict)
    # payment id -> when the harness first saw its action (monotonic)
    seen: dict[str, float] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, repr=False)
    _acted: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll the store for actions shown, and act on each at its time, until ``stop``."""
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            try:
                while not stop.is_set():
                    waiting = [pid for pid in self.planned if pid not in self.seen]
                    for pid, shown in (await self._shown(waiting)).items():
                        self.seen[pid] = time.monotonic()
                        task = asyncio.create_task(self._act(session, pid, shown))
                        self._tasks.append(task)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), _POLL_S)
            finally:
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def pending(self) -> int:
        """Payers shown their action who still mean to act."""
        return sum(
            1
            for pid in self.seen
            if self.planned[pid].move is not PayerMove.ABANDON and pid not in self.acts
        )

    async def wait_done(self, timeout_s: float) -> None:
        """Wait (bounded) until every payer shown an action who means to act has acted."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self.pending:
                    self._acted.clear()
                    await self._acted.wait()

    async def _shown(self, payment_ids: Sequence[str]) -> dict[str, _Shown]:
        shown: dict[str, _Shown] = {}
        async with self.engine.connect() as conn:
            for chunk in in_chunks(payment_ids):
                rows = await conn.execute(
                    select(
                        payments.c.id,
                        payments.c.next_action_target,
                        payments.c.next_action_expires_at,
                    )
                    .where(payments.c.id.in_(chunk))
                    .where(payments.c.status == PaymentStatus.REQUIRES_ACTION.value)
                    .where(payments.c.next_action_target.is_not(None))
                )
                for row in rows:
                    expires_at = as_utc(row.next_action_expires_at)
                    shown[row.id] = _Shown(str(row.next_action_target), expires_at)
        return shown

    async def _act(self, session: aiohttp.ClientSession, payment_id: str, shown: _Shown) -> None:
        plan = self.planned[payment_id]
        if plan.move is PayerMove.ABANDON:
            return
        if plan.move is PayerMove.LATE:
            # After the expiry as the acquirer's clock tells it (one machine: the same).
            wait = (shown.expires_at - utc_now()).total_seconds() + plan.delay_s
        else:
            wait = plan.delay_s
        # The payer's own schedule, not a wait for readiness.
        await asyncio.sleep(max(0.0, wait))
        result = "deny" if plan.move is PayerMove.DENY else "approve"
        url = shown.target.rstrip("/") + "/complete"
        try:
            async with session.post(url, json={"result": result}) as response:
                body = await response.json(content_type=None)
                code = None
                if response.status != 200 and isinstance(body, dict):
                    error = body.get("error")
                    code = str(error.get("code")) if isinstance(error, dict) else None
                self._record(payment_id, PayerAct(plan.move, response.status, code))
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            # The acquirer is never killed, so this is rare; recorded as 0 (no answer):
            # the approval may or may not have landed, and the verdict allows either.
            log.warning("payer of %s: no answer from the acquirer (%r)", payment_id, exc)
            self._record(payment_id, PayerAct(plan.move, 0, None))

    def _record(self, payment_id: str, act: PayerAct) -> None:
        self.acts[payment_id] = act
        self._acted.set()
