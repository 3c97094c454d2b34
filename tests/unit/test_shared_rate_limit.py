"""The shared rate limiter's leases, against a fake bucket store that records its takes."""

from __future__ import annotations

import asyncio

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


class GatedBuckets(FakeBuckets):
    """Holds every take until the test opens the gate, so requests pile up meanwhile."""

    def __init__(self, tokens: int) -> None:
        super().__init__(tokens)
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def take(
        self, client_id: str, *, count: int, rate_per_s: float, burst: int, now: float
    ) -> float:
        self.entered.set()
        await self.gate.wait()
        return await super().take(
            client_id, count=count, rate_per_s=rate_per_s, burst=burst, now=now
        )


async def test_requests_arriving_while_a_lease_is_renewed_spend_from_that_renewal() -> None:
    buckets, clock = GatedBuckets(tokens=1000), Clock()
    limiter = SharedRateLimiter(buckets, rate_per_s=1000.0, burst=1000, monotonic=clock)
    # Started in order: the first takes a lease, the others find it under way and wait.
    requests = [asyncio.create_task(limiter.acquire("c")) for _ in range(5)]
    await buckets.entered.wait()
    buckets.gate.set()
    assert await asyncio.gather(*requests) == [0.0] * 5
    assert buckets.takes == [100]  # one write for the five, not five leases


async def test_requests_waiting_on_a_refused_renewal_are_refused_without_asking_again() -> None:
    buckets, clock = GatedBuckets(tokens=0), Clock()
    limiter = SharedRateLimiter(buckets, rate_per_s=10.0, burst=10, monotonic=clock)
    requests = [asyncio.create_task(limiter.acquire("c")) for _ in range(3)]
    await buckets.entered.wait()
    buckets.gate.set()
    waits = await asyncio.gather(*requests)
    assert all(w > 0 for w in waits)
    assert len(set(waits)) == 1
    assert buckets.takes == [1]  # a lease of 1 at 10/s: the only take, refused


async def test_a_failed_renewal_lets_the_next_request_renew() -> None:
    class FailingOnce(FakeBuckets):
        def __init__(self) -> None:
            super().__init__(tokens=1000)
            self.failed = False

        async def take(
            self, client_id: str, *, count: int, rate_per_s: float, burst: int, now: float
        ) -> float:
            if not self.failed:
                self.failed = True
                raise ConnectionError("database unreachable")
            return await super().take(
                client_id, count=count, rate_per_s=rate_per_s, burst=burst, now=now
            )

    buckets, clock = FailingOnce(), Clock()
    limiter = SharedRateLimiter(buckets, rate_per_s=1000.0, burst=1000, monotonic=clock)
    with pytest.raises(ConnectionError):
        await limiter.acquire("c")
    assert await limiter.acquire("c") == 0.0
    assert buckets.takes == [100]


async def test_requests_waiting_on_a_failed_renewal_share_its_failure() -> None:
    """In an outage each renewal waits out the database's timeout: requests that waited for
    a failed one must not renew in turn, one after another (the last of N would wait N
    timeouts for its 503); they fail with it, as when each asked the store at once."""

    class Unreachable(GatedBuckets):
        async def take(
            self, client_id: str, *, count: int, rate_per_s: float, burst: int, now: float
        ) -> float:
            self.takes.append(count)
            self.entered.set()
            await self.gate.wait()  # the connect timeout, running out
            raise ConnectionError("database unreachable")

    buckets, clock = Unreachable(tokens=1000), Clock()
    limiter = SharedRateLimiter(buckets, rate_per_s=1000.0, burst=1000, monotonic=clock)
    requests = [asyncio.create_task(limiter.acquire("c")) for _ in range(3)]
    await buckets.entered.wait()
    buckets.gate.set()
    answers = await asyncio.gather(*requests, return_exceptions=True)
    assert [type(a) for a in answers] == [ConnectionError] * 3
    assert buckets.takes == [100]  # one wait for the outage, not one per request
    # The next request, after them, asks the store again.
    with pytest.raises(ConnectionError):
        await limiter.acquire("c")
    assert buckets.takes == [100, 100]


async def test_requests_waiting_on_a_cancelled_renewal_renew_themselves() -> None:
    # The renewing request's client left: its cancellation is not the others' answer.
    buckets, clock = GatedBuckets(tokens=1000), Clock()
    limiter = SharedRateLimiter(buckets, rate_per_s=1000.0, burst=1000, monotonic=clock)
    requests = [asyncio.create_task(limiter.acquire("c")) for _ in range(3)]
    await buckets.entered.wait()
    requests[0].cancel()
    buckets.gate.set()
    assert await asyncio.gather(*requests[1:]) == [0.0, 0.0]
    assert requests[0].cancelled()
    assert buckets.takes == [100]
