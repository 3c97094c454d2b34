"""The shared rate limiter's leases, against a fake bucket store that records its takes."""

from __future__ import annotations

import pytest

from http_facade.shared_rate_limit import SharedRateLimiter, lease_size

pytestmark = pytest.mark.unit


class FakeBuckets:
    """One bucket per client, with no refill: enough to see what the limiter takes."""

    def __init__(self, tokens: int) -> None:
        self.tokens: dict[str, int] = {}
        self.initial = tokens
        self.takes: list[int] = []

    async def take(
        self, client_id: str, *, count: int, rate_per_s: float, burst: int, now: float
    ) -> float:
        self.takes.append(count)
        held = self.tokens.get(client_id, self.initial)
        if held >= count:
            self.tokens[client_id] = held - count
            return 0.0
        return (count - held) / rate_per_s


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_lease_is_a_tenth_of_a_second_of_the_rate_within_a_tenth_of_the_burst() -> None:
    assert lease_size(1000.0, 1000, 0.1) == 100
    assert lease_size(1000.0, 50, 0.1) == 5
    assert lease_size(25.0, 50, 0.1) == 2
    # Slow limits take one token per request: exact.
    assert lease_size(1.0, 5, 0.1) == 1


async def test_requests_spend_a_lease_before_the_store_is_asked_again() -> None:
    buckets, clock = FakeBuckets(tokens=1000), Clock()
    limiter = SharedRateLimiter(buckets, rate_per_s=1000.0, burst=1000, monotonic=clock)
    waits = [await limiter.acquire("c") for _ in range(250)]
    assert waits == [0.0] * 250
    assert buckets.takes == [100, 100, 100]  # 250 requests, three leases of 100


async def test_an_expired_lease_is_dropped_and_never_handed_back() -> None:
    buckets, clock = FakeBuckets(tokens=1000), Clock()
    limiter = SharedRateLimiter(buckets, rate_per_s=1000.0, burst=1000, monotonic=clock)
    assert await limiter.acquire("c") == 0.0
    clock.now += 0.2  # past the lease's 0.1 s
    assert await limiter.acquire("c") == 0.0
    assert buckets.takes == [100, 100]
    assert buckets.tokens["c"] == 800  # the 99 unspent tokens of the first lease are gone


async def test_when_less_than_a_lease_is_left_single_tokens_are_taken() -> None:
    buckets, clock = FakeBuckets(tokens=3), Clock()
    limiter = SharedRateLimiter(buckets, rate_per_s=1000.0, burst=1000, monotonic=clock)
    waits = [await limiter.acquire("c") for _ in range(4)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3] > 0
    assert buckets.takes[:2] == [100, 1]


async def test_clients_have_leases_of_their_own() -> None:
    buckets, clock = FakeBuckets(tokens=1), Clock()
    limiter = SharedRateLimiter(buckets, rate_per_s=1.0, burst=1, monotonic=clock)
    assert await limiter.acquire("a") == 0.0
    assert await limiter.acquire("a") > 0
    assert await limiter.acquire("b") == 0.0


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="must be"):
        SharedRateLimiter(FakeBuckets(1), rate_per_s=0.0, burst=1)
    with pytest.raises(ValueError, match="must be"):
        SharedRateLimiter(FakeBuckets(1), rate_per_s=1.0, burst=0)
