"""When to ask a provider again about a payment that waits for its payer.

Invariants:

* The pause before the next check is the time the payment has waited so far, at least
  ``first`` and at most ``cap``: the checks come at about ``first``, twice, four times, ...
  that age, so a payment waiting for hours costs a handful of questions, not one per pass.
* The next check is never after the payer's action expires, so an expired payment is
  closed on the first pass after its expiry, as without the back-off.
* Only the checks slow down: a provider's notification is recorded when it comes.
"""

from __future__ import annotations

from datetime import datetime, timedelta


def next_check_at(
    now: datetime,
    waiting_since: datetime,
    action_expires_at: datetime | None,
    *,
    first: timedelta,
    cap: timedelta,
) -> datetime | None:
    """The earliest time to ask again after a check at ``now`` found the payment still
    waiting, or None to ask on the next pass (its action has expired)."""
    if first < timedelta(0) or cap < first:
        raise ValueError("the first pause must be at least 0 and at most the cap")
    if action_expires_at is not None and action_expires_at <= now:
        return None
    pause = min(cap, max(first, now - waiting_since))
    at = now + pause
    return at if action_expires_at is None else min(at, action_expires_at)
