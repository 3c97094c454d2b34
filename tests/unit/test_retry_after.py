"""Every wait a provider asks for enters paygate bounded: parsed once, clamped once."""

import math
import random
from datetime import UTC, datetime, timedelta

import pytest
import stripe

from domain.retry import RetryPolicy
from providers.errors import ProviderRateLimitedError, ProviderUnavailableError
from providers.retry_after import MAX_RETRY_AFTER_S, bounded_retry_after, parse_retry_after
from providers.sandbox import adapter
from providers.stripe.transformers import error_from_stripe

pytestmark = pytest.mark.unit

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("2", 2.0),
        (" 1.5 ", 1.5),
        ("0", 0.0),
        ("86400", MAX_RETRY_AFTER_S),  # a day would hold an in-flight slot for a day
        ("1e12", MAX_RETRY_AFTER_S),
        ("inf", MAX_RETRY_AFTER_S),
        ("Infinity", MAX_RETRY_AFTER_S),
        ("nan", None),
        ("-1", None),
        ("-inf", None),
        ("abc", None),
        ("", None),
        (None, None),
        ("Sat, 01 Mar 2025 12:00:20 GMT", 20.0),  # an HTTP-date, 20 s from now
        ("Sat, 01 Mar 2025 11:59:00 GMT", 0.0),  # gone by: no wait
        ("Sun, 01 Mar 2026 12:00:00 GMT", MAX_RETRY_AFTER_S),  # a year ahead
        ("Sat, 32 Mar 2025 12:00:00 GMT", None),  # no such date
    ],
)
def test_a_retry_after_header_is_parsed_and_bounded(header, expected):
    assert parse_retry_after(header, now=NOW) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (math.inf, MAX_RETRY_AFTER_S),
        (1e12, MAX_RETRY_AFTER_S),
        (86400.0, MAX_RETRY_AFTER_S),
        (math.nan, None),
        (-1.0, None),
        (None, None),
        (3.0, 3.0),
    ],
)
def test_a_provider_error_holds_only_a_bounded_wait(seconds, expected):
    assert bounded_retry_after(seconds) == expected
    assert ProviderRateLimitedError("acme", "slow down", seconds).retry_after == expected
    assert ProviderUnavailableError("acme", "down", retry_after=seconds).retry_after == expected
    # Set later, by an adapter or a plugin, it is bounded too.
    error = ProviderUnavailableError("acme", "down")
    error.retry_after = seconds
    assert error.retry_after == expected


@pytest.mark.parametrize("header", ["inf", "1e12", "86400", "nan", "-1", "abc"])
def test_the_adapters_hand_on_only_bounded_waits(header):
    with pytest.raises(ProviderRateLimitedError) as sandbox:
        adapter._raise_for_status(429, {"Retry-After": header}, None)
    stripe_error = error_from_stripe(
        stripe.RateLimitError("slow down", None, 429, None, {"retry-after": header})
    )
    assert isinstance(stripe_error, ProviderRateLimitedError)
    for waited in (sandbox.value.retry_after, stripe_error.retry_after):
        assert waited is None or 0 <= waited <= MAX_RETRY_AFTER_S


@pytest.mark.parametrize("seconds", [math.inf, 1e12, 86400.0, math.nan, -1.0])
def test_any_provider_wait_makes_a_delay_a_timedelta_can_hold(seconds):
    # What the handler does with it: now + timedelta(seconds=delay) raised OverflowError
    # for inf and 1e12 before the clamp.
    policy = RetryPolicy(max_retry_after_s=30.0, max_delay_s=10.0)
    error = ProviderRateLimitedError("acme", "slow down", seconds)
    for retry_after in (error.retry_after, seconds):  # bounded, and raw (defence in depth)
        delay = policy.delay_s(1, retry_after, random.Random(1))
        assert 0 < delay <= 30.0
        assert NOW + timedelta(seconds=delay) > NOW
