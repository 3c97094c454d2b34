import asyncio

import pytest

from consumer.key_ordering import KeyedWork

pytestmark = pytest.mark.unit


async def test_same_key_runs_in_order_and_never_overlaps():
    work = KeyedWork(max_in_flight=100)
    log: list[tuple[str, int]] = []
    running: set[str] = set()

    def job(key: str, n: int, delay: float):
        async def run():
            assert key not in running, f"{key} overlapped"
            running.add(key)
            await asyncio.sleep(delay)
            log.append((key, n))
            running.discard(key)

        return run

    for n in range(5):
        # Later jobs are faster: without ordering they would finish first.
        work.submit("p0", "order-a", job("order-a", n, 0.01 * (5 - n)))
        work.submit("p0", "order-b", job("order-b", n, 0.001))
    await work.drain(["p0"], timeout_s=5)
    assert [n for key, n in log if key == "order-a"] == [0, 1, 2, 3, 4]
    assert [n for key, n in log if key == "order-b"] == [0, 1, 2, 3, 4]
    assert work.in_flight == 0


async def test_different_keys_run_concurrently():
    work = KeyedWork(max_in_flight=100)
    gate = asyncio.Event()
    started = 0

    async def job():
        nonlocal started
        started += 1
        await gate.wait()

    for n in range(50):
        work.submit("p0", f"order-{n}", job)
    for _ in range(10):
        await asyncio.sleep(0)
    assert started == 50
    assert work.in_flight == 50
    assert work.free == 50
    gate.set()
    await work.drain(["p0"], timeout_s=5)
    assert work.free == 100


async def test_a_failed_job_does_not_block_its_key():
    work = KeyedWork(max_in_flight=10)
    ran: list[str] = []

    async def fails():
        raise RuntimeError("boom")

    async def succeeds():
        ran.append("second")

    first = work.submit("p0", "k", fails)
    work.submit("p0", "k", succeeds)
    await work.drain(["p0"], timeout_s=5)
    assert ran == ["second"]
    assert isinstance(first.exception(), RuntimeError)


async def test_drain_cancels_what_outlives_the_timeout_and_only_that_group():
    work = KeyedWork(max_in_flight=10)
    forever = asyncio.Event()
    other_done = asyncio.Event()

    async def stuck():
        await forever.wait()

    async def other():
        await asyncio.sleep(0.05)
        other_done.set()

    stuck_task = work.submit("p0", "a", stuck)
    work.submit("p1", "b", other)
    abandoned = await work.drain(["p0"], timeout_s=0.01)
    assert abandoned == 1
    assert stuck_task.cancelled()
    await asyncio.wait_for(other_done.wait(), 5)
    await work.drain(["p1"], timeout_s=5)
    assert work.in_flight == 0
    assert work.groups() == []


def test_limit_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        KeyedWork(0)


async def test_a_finished_job_reports_its_freed_slot_after_counting_it_free():
    seen: list[int] = []
    work: KeyedWork

    def on_freed() -> None:
        seen.append(work.free)

    work = KeyedWork(max_in_flight=1, on_slot_freed=on_freed)

    async def job():
        return None

    work.submit("p0", "k", job)
    assert work.free == 0
    await work.drain(["p0"], timeout_s=5)
    assert seen == [1]
