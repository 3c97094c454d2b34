"""domain.failed_refund_netting: which failed outside refunds a reading of the charge's
refunded total may count, by the provider's times."""

from __future__ import annotations

import pytest

from domain.failed_refund_netting import (
    FailedOutsideRefund,
    counted_failed_minor,
    counted_in_reading,
    later_reading,
)

pytestmark = pytest.mark.unit

STOOD = FailedOutsideRefund(200, made_at=100, failed_at=110)  # made at 100, failed at 110


@pytest.mark.parametrize(
    ("reading_at", "counted"),
    [
        (99, False),  # made before the refund: never counted it
        (100, True),  # the second it was made: may count it
        (105, True),  # while it stood
        (110, True),  # the second it failed: may still count it (whole seconds tie)
        (111, False),  # after the failure: Stripe's total already leaves it out
        (None, True),  # a reading without a time may count it
    ],
)
def test_a_reading_counts_a_failed_refund_only_while_it_stood(reading_at, counted):
    assert counted_in_reading(STOOD, reading_at) is counted


@pytest.mark.parametrize(
    ("failed", "reading_at", "counted"),
    [
        (FailedOutsideRefund(200), 10**9, True),  # no times (before 0032): always netted
        (FailedOutsideRefund(200, made_at=None, failed_at=110), 50, True),  # made when, unsaid
        (FailedOutsideRefund(200, made_at=None, failed_at=110), 111, False),
        (FailedOutsideRefund(200, made_at=100, failed_at=None), 10**9, True),
    ],
)
def test_a_time_not_known_counts_toward_netting(failed, reading_at, counted):
    assert counted_in_reading(failed, reading_at) is counted


def test_what_a_reading_may_count_adds_the_refunds_standing_then():
    failures = [
        STOOD,
        FailedOutsideRefund(50, made_at=107, failed_at=120),
        FailedOutsideRefund(30),
    ]
    assert counted_failed_minor(failures, 105) == 230
    assert counted_failed_minor(failures, 110) == 280
    assert counted_failed_minor(failures, 115) == 80
    assert counted_failed_minor(failures, 121) == 30
    assert counted_failed_minor([], 121) == 0


@pytest.mark.parametrize(
    ("stored", "reading", "kept"),
    [
        (None, (500, 10), (500, 10)),  # the first reading with a time
        ((500, 10), (400, 11), (400, 11)),  # made later, lower: Stripe's newer word
        ((400, 11), (500, 10), None),  # made earlier, delivered late: not the latest
        ((400, 11), (500, 11), (500, 11)),  # the same second: the greater
        ((500, 11), (400, 11), None),
        ((500, 11), (500, 11), None),  # a replay
    ],
)
def test_the_reading_kept_is_the_one_made_last(stored, reading, kept):
    assert later_reading(stored, reading) == kept


@pytest.mark.parametrize("reading_at", [None, 50, 100, 101, 110, 10**9])
def test_a_refund_made_after_its_failure_by_the_times_told_is_netted_from_every_reading(
    reading_at,
):
    """Times that contradict each other (a skew between the provider's clocks) say nothing
    of which readings counted the refund: netted from each, as a failure without times."""
    inverted = FailedOutsideRefund(200, made_at=101, failed_at=100)
    assert counted_in_reading(inverted, reading_at) is True
