"""Withholding the re-send of an in-doubt call its provider may no longer dedupe: the one
piece of code the payment and refund handlers run before sending a call again.

The rule is domain.resend_window's (a key is re-sent only while its call began less than
the provider's window, minus a margin, ago). Past that, the call is never re-sent and never
failed on the provider's silence either (its first copy may have landed and not show yet):
it stays pending -- the claim released, the call still open -- for an operator to settle with
the provider (docs/runbook.md#paygateresendwithheld). Every time a handler finds it so, it
is logged at error level and counted in ``paygate_resends_withheld_total``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Literal

from domain.resend_window import may_resend
from telemetry.metrics import Metrics

log = logging.getLogger("paygate.consumer")


async def withheld(
    *,
    operation: Literal["payment", "refund"],
    began_at: datetime,
    now: datetime,
    provider: str,
    window: timedelta | None,
    metrics: Metrics,
    release: Callable[[], Awaitable[None]],
    extra: Mapping[str, str],
) -> bool:
    """True when the call begun at ``began_at`` may not be sent again under its key: then
    it is logged (with ``extra`` and the provider), counted, and its claim ``release``-d;
    the caller leaves it pending. False, doing nothing, while the key is honoured."""
    if may_resend(began_at, now, window):
        return False
    log.error(
        f"in-doubt {operation} older than its provider's idempotency window; not re-sent, "
        "left pending for an operator",
        extra={**extra, "provider": provider},
    )
    metrics.resends_withheld.labels(provider, operation).inc()
    await release()
    return True
