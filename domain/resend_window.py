"""Whether an in-doubt call may be sent again under its idempotency key.

A provider honours an idempotency key only for a while (Stripe: 24 hours, then the key may
be pruned). Past that, a re-send of a call whose first copy did land -- but does not show
yet in the provider's status answer (Stripe's search lags, up to an hour in incidents) --
is a new call: a second charge or refund. So the rule is structural, not a matter of
tuning: a key is re-sent only while its call began less than the provider's window, minus
:data:`RESEND_MARGIN`, ago. After that the call stays in doubt for an operator
(docs/runbook.md), however sure the provider's silence looks.

``window`` None: the provider honours the key for ever (its key is unique per merchant for
good, as the sandbox's ledger and Alipay's ``out_trade_no`` are), so any age may be re-sent.
"""

from __future__ import annotations

from datetime import datetime, timedelta

# Covers what happens between this check and the provider reading the key: the retries
# and back-off of the re-send itself (bounded by the retry policy, minutes), a clock of
# this host ahead of the one that stamped the attempt, and the provider's own counting
# (from its receipt of the first call, which is later than the attempt began: in our favour).
RESEND_MARGIN = timedelta(hours=1)


def may_resend(began_at: datetime, now: datetime, window: timedelta | None) -> bool:
    """True while a call begun at ``began_at`` may be sent again under the same key."""
    if window is None:
        return True
    return now - began_at < window - RESEND_MARGIN
