"""Withholding the re-send of an in-doubt call its provider may no longer dedupe: the one
piece of code the payment and refund handlers run before sending a call again.

The rule is domain.resend_window's (a key is re-sent only while its call began less than
the provider's window, minus a margin, ago). Past that, the call is never re-sent and never
failed on the provider's silence either (its first copy may have landed and not show yet):
it stays pending -- the claim released, the call still open -- for an operator to settle with
the provider (``paygate reconcile settle``, docs/runbook.md#paygateresendwithheld). Every
time a handler finds it so, it is counted in ``paygate_resends_withheld_total`` and logged
at error level at most once an hour (consumer.withheld_reports).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from consumer.withheld_reports import Operation, WithheldReports
from domain.resend_window import may_resend


async def withheld(
    *,
    operation: Operation,
    subject_id: str,
    began_at: datetime,
    now: datetime,
    provider: str,
    window: timedelta | None,
    reports: WithheldReports,
    release: Callable[[], Awaitable[None]],
) -> bool:
    """True when the call begun at ``began_at`` may not be sent again under its key: then
    it is reported (``reports``: counted, logged at most hourly) and its claim
    ``release``-d; the caller leaves it pending. False, doing nothing, while the key is
    honoured."""
    if may_resend(began_at, now, window):
        return False
    reports.withheld(operation, subject_id, provider, began_at)
    await release()
    return True
