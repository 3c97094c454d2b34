"""How a withheld re-send is reported: counted on every pass, logged once an hour at most.

A call in doubt past its provider's idempotency window (domain.resend_window) is never sent
again and never failed on the provider's silence: it stays pending until an operator settles
it (``paygate reconcile settle``, docs/runbook.md#paygateresendwithheld). Every reconciler
pass finds it again. Each finding is counted in ``paygate_resends_withheld_total`` (the
alert and its rate read that), but the error log line says it only once per
:data:`LOG_EVERY` per payment (or refund): an hourly line is enough to find it by, and one
line per pass for a day would bury the rest of the log.

Invariant: the first finding of a payment in this process is logged, and a later one is
logged once :data:`LOG_EVERY` has passed since that payment's last line; the line says how
many findings it stands for. The memory of what was logged holds only lines of the last
:data:`LOG_EVERY` (older ones are dropped when a line is written), so it is bounded by the
payments withheld within an hour, not by history. It is per process: a restarted consumer
(or a ``paygate reconcile`` run) logs each one again once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final, Literal

from telemetry.metrics import Metrics

log = logging.getLogger("paygate.consumer")

LOG_EVERY: Final = timedelta(hours=1)

Operation = Literal["payment", "refund"]

_ID_FIELD: Final[dict[Operation, str]] = {"payment": "payment_request_id", "refund": "refund_id"}


class WithheldReports:
    def __init__(
        self,
        metrics: Metrics,
        clock: Callable[[], datetime],
        *,
        every: timedelta = LOG_EVERY,
    ) -> None:
        self._metrics = metrics
        self._clock = clock
        self._every = every
        # (operation, id) -> (when its last line was written, findings not logged since)
        self._logged: dict[tuple[Operation, str], tuple[datetime, int]] = {}

    def withheld(
        self, operation: Operation, subject_id: str, provider: str, began_at: datetime
    ) -> None:
        """One finding of a withheld call: counted; logged at error level if its last line
        is :data:`LOG_EVERY` old or it has none."""
        self._metrics.resends_withheld.labels(provider, operation).inc()
        self._log(
            operation,
            subject_id,
            "in-doubt %s older than its provider's idempotency window; not re-sent, "
            "left pending for an operator",
            {"provider": provider, "attempt_began_at": began_at.isoformat()},
        )

    def limit_reached(
        self, operation: Operation, subject_id: str, provider: str, resends: int
    ) -> None:
        """One finding of a call whose key was re-sent the most it may be
        (domain.resend_window.may_resend_again): counted in
        ``paygate_resend_limit_reached_total``, logged as :meth:`withheld` is."""
        self._metrics.resend_limit_reached.labels(provider, operation).inc()
        self._log(
            operation,
            subject_id,
            "in-doubt %s re-sent the most it may be and its provider still holds nothing "
            "under its key; not re-sent, left pending for an operator",
            {"provider": provider, "resends": resends},
        )

    def _log(
        self, operation: Operation, subject_id: str, message: str, extra: dict[str, object]
    ) -> None:
        now = self._clock()
        key = (operation, subject_id)
        last = self._logged.get(key)
        if last is not None and now - last[0] < self._every:
            self._logged[key] = (last[0], last[1] + 1)
            return
        self._forget_lines_before(now - self._every)
        self._logged[key] = (now, 0)
        log.error(
            message,
            operation,
            extra={
                _ID_FIELD[operation]: subject_id,
                **extra,
                # Findings since this one's previous line, which this line stands for too.
                "withheld_unlogged": 0 if last is None else last[1],
            },
        )

    def _forget_lines_before(self, moment: datetime) -> None:
        stale = [key for key, (at, _count) in self._logged.items() if at <= moment]
        for key in stale:
            del self._logged[key]
