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
    first = next(r for r in caplog.records if "unreachable" in r.getMessage())
    assert first.getMessage() == "test job: a dependency unreachable"
    assert first.exc_info is not None  # not known to be an outage: its traceback, once


async def test_a_database_outage_is_logged_when_it_starts_and_ends_not_at_every_run(caplog):
    import sqlalchemy.exc as sa

    caplog.set_level("DEBUG")
    stop = asyncio.Event()
    runs = 0

    async def job() -> int:
        nonlocal runs
        runs += 1
        if runs <= 20:
            raise sa.OperationalError("SELECT 1", {}, ConnectionRefusedError(111, "refused"))
        stop.set()
        return 0

    await asyncio.wait_for(run_periodically(stop, 0.001, job, "test job"), 5)
    lines = [r.getMessage() for r in caplog.records if r.name == "paygate.housekeeping"]
    assert runs == 21
    assert lines[0] == "database unreachable"
    assert lines[-1].startswith("database reachable again after")
    assert len(lines) == 2  # within the first summary period: no summary yet
    assert all(r.exc_info is None for r in caplog.records if r.name == "paygate.housekeeping")
