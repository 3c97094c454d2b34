import pytest

from paygate.startup import start_with_retry

pytestmark = pytest.mark.unit


async def test_start_is_retried_until_it_succeeds():
    calls = 0

    async def start() -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("broker restarting")

    await start_with_retry(start, "test", give_up_after_s=10, max_backoff_s=0.01)
    assert calls == 3


async def test_it_gives_up_after_the_deadline_with_the_last_error():
    async def start() -> None:
        raise ConnectionError("still down")

    with pytest.raises(ConnectionError, match="still down"):
        await start_with_retry(start, "test", give_up_after_s=0.05, max_backoff_s=0.01)
