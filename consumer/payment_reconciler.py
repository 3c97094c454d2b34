"""Settles in-doubt payments whose owner is gone, by asking the provider, never by charging
again.

After the in-doubt payments, each pass runs the stray-charge sweep (consumer.stray_charges).

An attempt is in doubt when its outcome was never recorded: the provider timed out, or the
worker died between the write-ahead commit and the provider's answer. The reconciler looks
at in-doubt attempts older than ``min_age`` whose payment nobody holds the claim on (see
persistence.claims): a live owner's payment is its owner's. It takes the claim -- if
another worker takes it first, it leaves the payment -- and settles the attempt with the
command handler's own :meth:`PaymentCommandHandler.resolve`, so a redelivery and the
reconciler follow one decision table:

| provider says          | what happens                                               |
| ---------------------- | ---------------------------------------------------------- |
| charged / authorized   | recorded: succeeded / authorized                           |
| declined               | recorded: failed                                           |
| no record of the key   | re-sent with the same key, from the command sealed into    |
|                        | the attempt, while its provider still honours the key      |
|                        | (domain.resend_window); past that left pending for an      |
|                        | operator; failed as never received only if there is no     |
|                        | sealed command and the attempt is older than abandon_after |
|                        | plus its provider's search lag (domain.search_lag)         |
| error / not configured | claim released; still pending, asked again next pass       |

One payment never stops a pass (consumer.pass_guard): if settling it raises anything but a
dependency outage, it is logged with its traceback and counted ``failed``, its claim given
back for a later pass, and the pass goes on with the others and the sweep -- the defence
behind the claims, which one such payment used to keep from ever running. An outage still
ends the pass.

A payment still waiting for its payer (``requires_action``) is not asked about on every
pass: it is held back (``check_again_at``) for as long as it has waited so far, from
``min_age`` up to ``waiting_max``, never past its action's expiry (domain.waiting_checks).
Its provider's notification is recorded when it comes (consumer.provider_notices).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from consumer.pass_guard import FAILED, OWNED_ELSEWHERE, result_of, unless_poisoned
from consumer.payment_handler import PaymentCommandHandler
from consumer.periodic import run_periodically
from consumer.ports import PaymentWrites
from consumer.stray_charges import StraySweep, SweepReport
from domain.clock import utc_now
from domain.status import PaymentStatus
from domain.waiting_checks import next_check_at
from persistence.payment_claims import InDoubt
from telemetry.metrics import Metrics

log = logging.getLogger("paygate.reconciler")

PAGE_SIZE = 500


@dataclass
class ReconcileReport:
    checked: int = 0
    resolved: int = 0
    already_final: int = 0
    owned_elsewhere: int = 0
    still_pending: int = 0
    failed: int = 0
    strays: SweepReport | None = None


class PaymentReconciler:
    def __init__(
        self,
        *,
        store: PaymentWrites,
        handler: PaymentCommandHandler,
        metrics: Metrics,
        min_age: timedelta,
        sweep: StraySweep | None = None,
        clock: Callable[[], datetime] = utc_now,
        waiting_max: timedelta = timedelta(seconds=120),
    ) -> None:
        self._store = store
        self._sweep = sweep
        self._handler = handler
        self._metrics = metrics
        self._min_age = min_age
        self._clock = clock
        self._waiting_max = max(waiting_max, min_age)

    async def run_once(self, limit: int = PAGE_SIZE) -> ReconcileReport:
        report = ReconcileReport()
        for item in await self._store.in_doubt(self._clock() - self._min_age, limit):
            report.checked += 1
            pid = item.payment.payment_request_id
            result = await unless_poisoned(
                self._reconcile(pid),
                skipped=FAILED,
                what="in-doubt payment not reconciled; asked again next pass",
                extra={"payment_request_id": pid},
            )
            if result == "still_pending":
                await self._hold_back_if_waiting(item)
            setattr(report, result, getattr(report, result) + 1)
            self._metrics.reconciled.labels(result).inc()
        if self._sweep is not None:
            report.strays = await self._sweep.run_once()
        return report

    async def run(self, stop: asyncio.Event, interval_s: float) -> None:
        """Reconcile every ``interval_s`` until ``stop`` is set; errors are logged, not fatal.

        The result for each examined payment is counted in ``paygate_reconciled_total``."""

        async def checked() -> int:
            return (await self.run_once()).checked

        await run_periodically(stop, interval_s, checked, "in-doubt payments examined")

    async def _hold_back_if_waiting(self, item: InDoubt) -> None:
        """After a check that found ``item`` still waiting for its payer: not again before
        the time domain.waiting_checks gives (its status and action as the query read them;
        the store writes nothing unless it is still ``requires_action``)."""
        payment = item.payment
        if payment.status is not PaymentStatus.REQUIRES_ACTION:
            return
        now = self._clock()
        action = payment.next_action
        at = next_check_at(
            now,
            item.attempt_started_at,
            None if action is None else action.expires_at,
            first=self._min_age,
            cap=self._waiting_max,
        )
        if at is not None:
            await self._store.check_again_at(payment.payment_request_id, at)

    async def _reconcile(self, payment_id: str) -> str:
        claimed = await self._store.claim(payment_id)
        if claimed is None:
            # Taken by a worker since the query, or finished: either way not ours.
            return OWNED_ELSEWHERE
        return result_of(await self._handler.resolve(claimed.payment, claimed))
