"""The one way a provider's wait ("Retry-After") enters paygate: parsed, then bounded.

A provider may ask for any wait at all: ``inf``, ``1e12``, ``NaN``, a negative number, a
date, or a day (``86400``). Each would hold a payment, and the in-flight slot it runs in,
for as long as it says, and a non-finite or huge one makes ``timedelta`` raise
``OverflowError``. So every wait a provider gives passes through :func:`bounded_retry_after`
(the :class:`providers.errors.ProviderError` constructor calls it), and an adapter reads a
``Retry-After`` header only with :func:`parse_retry_after`.

Invariant: a ``retry_after`` held by paygate is None or a finite float in
``[0, MAX_RETRY_AFTER_S]``. The operator's lower maximum (``PAYGATE_PROVIDER_MAX_RETRY_AFTER_S``)
is applied on top of it by :class:`domain.retry.RetryPolicy`.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

# No provider wait paygate honours is longer: five minutes of one in-flight slot is already
# far more than any outage the retry budget is meant to ride out.
MAX_RETRY_AFTER_S: Final = 300.0


def bounded_retry_after(seconds: float | None) -> float | None:
    """``seconds`` as a wait paygate can honour: None when it means nothing (None, NaN,
    negative), else clamped to ``[0, MAX_RETRY_AFTER_S]`` (``inf`` and ``1e12`` become the
    maximum: the provider did ask for a long wait)."""
    if seconds is None or math.isnan(seconds) or seconds < 0:
        return None
    return min(float(seconds), MAX_RETRY_AFTER_S)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """The wait a ``Retry-After`` header value asks for, in seconds, bounded.

    Delay-seconds (RFC 9110; a decimal fraction is accepted too) or an HTTP-date, which
    counts from ``now`` (default: the current time) and is 0 when already past. Anything
    else (absent, empty, ``abc``, ``nan``, a negative number) is None: no hint.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return bounded_retry_after(float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT; a bare one is read as such
        when = when.replace(tzinfo=UTC)
    wait = (when - (now or datetime.now(UTC))).total_seconds()
    return bounded_retry_after(max(wait, 0.0))
