"""domain.provider_refunds: what paygate records of refunds the provider reports on a
charge it had not recorded captured."""

from __future__ import annotations

import pytest

from domain.money import Money
from domain.provider_refunds import (
    absorbed_refunded_total,
    refunded_at_provider,
    status_with_refunds,
)
from domain.status import PaymentStatus

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("refunded", "in_full", "recorded"),
    [
        (None, False, 0),
        (Money(2500, "EUR"), False, 2500),
        (Money(6000, "EUR"), False, 6000),
        (None, True, 6000),  # Alipay's closed paid trade: all of it, amount unsaid
    ],
)
def test_the_refunded_total_is_the_providers(refunded, in_full, recorded):
    assert refunded_at_provider(6000, "EUR", refunded, in_full=in_full) == recorded


@pytest.mark.parametrize("refunded", [Money(6001, "EUR"), Money(100, "USD")])
def test_an_amount_no_refund_of_the_capture_can_be_is_not_recorded(refunded):
    with pytest.raises(ValueError, match="refunded"):
        refunded_at_provider(6000, "EUR", refunded)


@pytest.mark.parametrize(
    ("refunded", "status"),
    [
        (0, PaymentStatus.SUCCEEDED),
        (1, PaymentStatus.PARTIALLY_REFUNDED),
        (5999, PaymentStatus.PARTIALLY_REFUNDED),
        (6000, PaymentStatus.REFUNDED),
    ],
)
def test_the_status_follows_what_remains(refunded, status):
    assert status_with_refunds(6000, refunded) is status


@pytest.mark.parametrize(
    ("refunded", "reserved", "provider", "recorded"),
    [
        (0, 0, 6000, 6000),  # all refunded outside paygate
        (1000, 0, 6000, 6000),  # paygate's 10.00 among the provider's 60.00
        (1000, 0, 1000, None),  # only paygate's own: nothing new
        (1000, 0, 500, None),  # an older notification: never backwards
        (0, 2000, 2000, None),  # paygate's refund in flight, already made: not counted twice
        (0, 2000, 3000, 1000),  # in flight, and 10.00 more refunded outside
        (0, 2000, 9000, 4000),  # never above what is captured less what is reserved
    ],
)
def test_a_provider_total_absorbs_only_what_cannot_be_paygates_own(
    refunded, reserved, provider, recorded
):
    assert absorbed_refunded_total(6000, refunded, reserved, provider) == recorded


@pytest.mark.parametrize(
    ("refunded", "reserved", "failed", "provider", "recorded"),
    [
        (0, 0, 2000, 5000, 3000),  # a late notice counting a failed refund: not outside
        (0, 0, 2000, 3000, 1000),  # made after the failure: less than outside, never more
        (0, 0, 2000, 2000, None),  # only the failed one: nothing
        (1000, 1000, 2000, 6000, 3000),  # with refunds done and in flight
    ],
)
def test_a_refund_that_failed_at_the_provider_is_never_absorbed_as_refunded_outside(
    refunded, reserved, failed, provider, recorded
):
    assert absorbed_refunded_total(6000, refunded, reserved, provider, failed) == recorded
