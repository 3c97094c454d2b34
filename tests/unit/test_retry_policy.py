import random

import pytest

from domain.retry import RetryPolicy

pytestmark = pytest.mark.unit


def test_the_delay_grows_exponentially_with_jitter_and_is_capped():
    policy = RetryPolicy(max_attempts=10, base_delay_s=1.0, max_delay_s=8.0)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (7, 8.0)]:
        delay = policy.delay_s(attempt, None, rng)
        assert ceiling / 2 <= delay <= ceiling


def test_retry_after_is_honoured():
    policy = RetryPolicy(base_delay_s=0.1, max_delay_s=1.0)
    assert policy.delay_s(1, 5.0, random.Random(1)) == 5.0


def test_attempts_are_capped():
    policy = RetryPolicy(max_attempts=3)
    assert policy.may_retry_after(2)
    assert not policy.may_retry_after(3)


@pytest.mark.parametrize(
    "kwargs", [{"max_attempts": 0}, {"base_delay_s": 0}, {"base_delay_s": 2, "max_delay_s": 1}]
)
def test_nonsense_is_refused(kwargs):
    with pytest.raises(ValueError, match=r"must be|need"):
        RetryPolicy(**kwargs)


# -- the retry budget -------------------------------------------------------------------------


class LowestRandom(random.Random):
    """Always the least jitter: the schedule at its shortest."""

    def uniform(self, a: float, b: float) -> float:
        return a


class HighestRandom(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return b


def schedule(policy: RetryPolicy, rng: random.Random) -> list[float]:
    """The delays a payment whose provider stays down waits, attempt after attempt, when
    the handler passes only the attempt number (as it does today)."""
    delays, attempt = [], 1
    while policy.may_retry_after(attempt):
        delays.append(policy.delay_s(attempt, None, rng))
        attempt += 1
    return delays


def test_by_default_a_provider_outage_of_a_minute_and_more_is_ridden_out():
    from paygate.settings import Settings

    settings = Settings()
    policy = settings.retry_policy()
    cap = settings.retry_max_delay_s
    for rng in [LowestRandom(), HighestRandom(), *(random.Random(seed) for seed in range(50))]:
        delays = schedule(policy, rng)
        assert sum(delays) >= settings.provider_retry_budget_s >= 60
        assert all(0 < delay <= cap for delay in delays)
    # The slot is held for a bounded time too: at most every step at its ceiling.
    assert sum(schedule(policy, HighestRandom())) == pytest.approx(185.5)
    assert len(schedule(policy, LowestRandom())) + 1 == 23  # calls before it fails


def test_the_schedule_is_deterministic_with_an_injected_rng():
    policy = RetryPolicy(max_attempts=None, base_delay_s=0.5, max_delay_s=10.0, budget_s=90.0)
    assert schedule(policy, random.Random(7)) == schedule(policy, random.Random(7))
    assert schedule(policy, random.Random(7)) != schedule(policy, random.Random(8))


def test_the_budget_is_the_least_the_back_offs_add_up_to():
    policy = RetryPolicy(max_attempts=None, base_delay_s=1.0, max_delay_s=4.0, budget_s=10.0)
    # Least delays 0.5, 1, 2, 2, 2, 2, 2...
    least = [0, 0.5, 1.5, 3.5, 5.5, 7.5, 9.5, 11.5]
    assert [policy.least_wait_s(n) for n in range(8)] == least
    assert policy.may_retry_after(7)  # six back-offs taken before it: at least 9.5 s < 10
    assert not policy.may_retry_after(8)  # seven: at least 11.5 s


def test_attempts_and_time_both_limit_when_both_are_set():
    policy = RetryPolicy(max_attempts=3, base_delay_s=1.0, max_delay_s=4.0, budget_s=10.0)
    assert policy.may_retry_after(2)
    assert not policy.may_retry_after(3)
    assert not RetryPolicy(max_attempts=10, budget_s=0.0).may_retry_after(1)


def test_given_the_elapsed_time_the_budget_is_measured_by_the_clock():
    policy = RetryPolicy(max_attempts=None, base_delay_s=1.0, max_delay_s=4.0, budget_s=10.0)
    assert policy.may_retry_after(50, elapsed_s=9.9)  # many quick failovers, little time
    assert not policy.may_retry_after(2, elapsed_s=10.0)  # a long Retry-After, say
    assert not policy.may_retry_after(2, elapsed_s=float("nan"))
    with_attempts = RetryPolicy(max_attempts=4, budget_s=10.0)
    assert not with_attempts.may_retry_after(4, elapsed_s=0.0)


def test_a_provider_wait_is_honoured_up_to_its_maximum():
    policy = RetryPolicy(base_delay_s=0.1, max_delay_s=1.0, max_retry_after_s=30.0)
    assert policy.delay_s(1, 20.0, random.Random(1)) == 20.0
    assert policy.delay_s(1, 86400.0, random.Random(1)) == 30.0
    assert policy.delay_s(1, float("inf"), random.Random(1)) == 30.0
    assert policy.delay_s(1, float("nan"), random.Random(1)) <= 0.1
    assert policy.delay_s(1, -5.0, random.Random(1)) <= 0.1


def test_huge_attempt_numbers_neither_overflow_nor_take_long():
    policy = RetryPolicy(max_attempts=None, base_delay_s=0.001, max_delay_s=10.0, budget_s=3600)
    assert policy.delay_s(10**6, None, random.Random(1)) <= 10.0
    assert policy.least_wait_s(10**9) == pytest.approx(5.0 * 10**9, rel=1e-3)
    assert not policy.may_retry_after(10**9)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": None},  # no limit at all: a dead provider would hold it forever
        {"budget_s": -1.0},
        {"budget_s": float("inf")},
        {"max_retry_after_s": -1.0},
        {"max_retry_after_s": float("nan")},
        {"max_delay_s": float("inf")},
    ],
)
def test_a_budget_without_bounds_is_refused(kwargs):
    with pytest.raises(ValueError, match=r"must be|need"):
        RetryPolicy(**kwargs)
