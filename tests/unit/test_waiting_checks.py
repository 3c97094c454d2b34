"""domain.waiting_checks: the pause before a waiting payment's provider is asked again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.waiting_checks import next_check_at

pytestmark = pytest.mark.unit

START = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
FIRST, CAP = timedelta(seconds=30), timedelta(minutes=2)


def _after(waited_s: float, expires_at: datetime | None = None) -> datetime | None:
    now = START + timedelta(seconds=waited_s)
    return next_check_at(now, START, expires_at, first=FIRST, cap=CAP)


def test_the_pause_doubles_the_wait_from_the_first_pause_up_to_the_cap() -> None:
    checks, now = [], START + FIRST
    for _ in range(5):
        checks.append(now)
        at = next_check_at(now, START, None, first=FIRST, cap=CAP)
        assert at is not None
        now = at
    # 30 s, 60 s, 120 s, 240 s waited; then every two minutes.
    assert [round((c - START).total_seconds()) for c in checks] == [30, 60, 120, 240, 360]


def test_a_young_wait_still_pauses_the_first_pause() -> None:
    assert _after(5) == START + timedelta(seconds=35)


def test_the_next_check_is_never_after_the_action_expires() -> None:
    expires_at = START + timedelta(seconds=100)
    assert _after(90, expires_at) == expires_at
    assert _after(60, expires_at) == expires_at  # 60 s more would pass it
    assert _after(30, expires_at) == START + timedelta(seconds=60)


def test_an_expired_action_is_checked_on_the_next_pass() -> None:
    expires_at = START + timedelta(seconds=100)
    assert _after(100, expires_at) is None
    assert _after(500, expires_at) is None


def test_no_floor_without_a_minimum_age() -> None:
    now = START
    assert next_check_at(now, START, None, first=timedelta(0), cap=CAP) == now


@pytest.mark.parametrize(
    ("first", "cap"), [(timedelta(seconds=-1), CAP), (timedelta(minutes=3), CAP)]
)
def test_bounds_that_make_no_schedule_are_refused(first: timedelta, cap: timedelta) -> None:
    with pytest.raises(ValueError, match="first pause"):
        next_check_at(START, START, None, first=first, cap=cap)
