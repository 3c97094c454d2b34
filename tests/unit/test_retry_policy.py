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
