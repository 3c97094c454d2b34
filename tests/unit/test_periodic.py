import asyncio

import pytest

from consumer.periodic import run_periodically

pytestmark = pytest.mark.unit


async def test_a_failing_run_is_logged_and_the_job_runs_again_until_stopped(caplog):
    stop = asyncio.Event()
    runs = 0

    async def job() -> int:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("database away")
        if runs == 3:
            stop.set()
        return 1

    await asyncio.wait_for(run_periodically(stop, 0.01, job, "test job"), 5)
    assert runs == 3
    assert "test job failed" in caplog.text
