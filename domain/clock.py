"""The wall clock, in UTC: the default of every ``clock`` parameter (tests pass their own)."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)
