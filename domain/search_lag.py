"""When a provider's "no charge under this key" is final.

paygate asks a provider whether an attempt key charged (``charge_status``). Some providers
answer from a search index that trails their charges: Stripe's Search API is usually current
within a minute but can be an hour behind during incidents. A "no" from such a provider says
only that no charge made more than its lag ago is under the key; a later one may still appear.

So a "no" closes a question for good (the stray sweep's ``verified`` mark, failing a payment
the provider "never received") only once every charge the key could have made is older than
the provider's lag. When that was is the caller's to say: the latest moment a call of the key
could still reach the provider (a closed attempt: its closing plus the time a call in flight
needs to arrive). Before that, the key is asked again, and a charge it finds is acted on at
once: only the final "no" waits.

A provider declaring no lag (zero: its status query reads its own record of the key) is
final at once, as before this rule.
"""

from __future__ import annotations

from datetime import datetime, timedelta


def no_charge_final_at(last_possible_charge: datetime, lag: timedelta) -> datetime:
    """From when a "no charge" answer about a key is final: ``lag`` after the latest moment
    the key could have charged."""
    if lag < timedelta(0):
        raise ValueError("a provider's search lag is never negative")
    return last_possible_charge + lag


def no_charge_is_final(
    last_possible_charge: datetime | None, now: datetime, lag: timedelta
) -> bool:
    """Whether a "no charge" answered at ``now`` is final. ``last_possible_charge`` None: the
    key may still charge (a call of it may be sent yet), so only a provider without lag's
    answer is final."""
    if lag == timedelta(0):
        return True
    if last_possible_charge is None:
        return False
    return now >= no_charge_final_at(last_possible_charge, lag)
