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

A second bound, on the number of re-sends (:func:`may_resend_again`): a provider that holds
nothing under the key and answers every re-send with the same answer of unknown outcome
(Alipay's precreate refused with a sub code paygate cannot read, ``ACQ.SYSTEM_ERROR`` for
ever) would have it re-sent at every reconciler pass for ever, and, with no window, no
operator path either. Past ``limit`` re-sends the key is withheld for an operator as one
past its window is (alert PaygateResendLimitReached, docs/alipay.md "Bounded re-sends").
Not a money rule (a re-send under a honoured key cannot charge twice): a stall rule.
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


# Re-sends of one in-doubt key before it is withheld (PAYGATE_RESEND_LIMIT's default). A
# key is re-sent at most once per reconciler pass (10 s apart by default; the retries of
# calls that certainly did not go out are not counted: consumer.payment_handler takes their
# count back), and only after its provider answered "no record"
# (a provider that cannot be reached fails the question first and is not re-sent): 100 is
# about 17 minutes of a provider that answers, yet never takes the call.
DEFAULT_RESEND_LIMIT = 100


def may_resend_again(resends: int, limit: int, window: timedelta | None) -> bool:
    """True while a key sent again ``resends`` times may be sent once more.

    Only a provider that honours keys for good (``window`` None) is bounded by count: one
    with a window is bounded by it (:func:`may_resend`), and counting its re-sends too would
    withhold, for an operator who may act only once the window is over, payments a partial
    outage (status questions answered, calls failing) left in doubt for a few minutes and
    that the next pass after it would have settled."""
    return window is not None or resends < limit
