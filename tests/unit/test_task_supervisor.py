"""The supervisor restarts a crashed body with a bounded, doubling back-off; time is faked."""

from __future__ import annotations

import asyncio
import logging

import pytest

from http_facade.task_supervisor import TaskSupervisor

pytestmark = pytest.mark.unit


class FakeTime:
    """A clock that only moves when told, and a sleep that records and returns at once
    (or, when ``hold`` is set, waits until the test releases it)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.hold: asyncio.Event | None = None
        self.sleeping = asyncio.Event()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.sleeping.set()
        if self.hold is not None:
            await self.hold.wait()


class ScriptedBody:
    """Run n does ``script[n]``: raise it, return (None), or run on (past the script) until
    cancelled; ``started[n]`` is set when run n begins."""

    def __init__(self, script: list[BaseException | None], time: FakeTime, run_s=0.0) -> None:
        self.script = script
        self.time = time
        self.run_s = run_s
        self.runs = 0
        self.started = [asyncio.Event() for _ in range(len(script) + 1)]
        self.cancelled = False

    async def __call__(self) -> None:
        n = self.runs
        self.runs += 1
        self.started[min(n, len(self.script))].set()
        self.time.now += self.run_s[n] if isinstance(self.run_s, list) else self.run_s
        if n < len(self.script):
            outcome = self.script[n]
            if outcome is not None:
                raise outcome
            return
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


def _supervisor(body, time: FakeTime, restarts: list[None], **kwargs) -> TaskSupervisor:
    return TaskSupervisor(
        body,
        name="test-task",
        on_restart=lambda: restarts.append(None),
        sleep=time.sleep,
        clock=time.clock,
        **kwargs,
    )


async def test_crashes_are_restarted_with_a_doubling_back_off_up_to_the_cap() -> None:
    time = FakeTime()
    body = ScriptedBody([RuntimeError("boom")] * 5, time)
    restarts: list[None] = []
    supervisor = _supervisor(body, time, restarts, initial_backoff_s=1.0, max_backoff_s=4.0)
    supervisor.start()
    await body.started[-1].wait()
    assert time.sleeps == [1.0, 2.0, 4.0, 4.0, 4.0]
    assert len(restarts) == 5
    assert supervisor.running
    await supervisor.stop()
    assert body.cancelled
    assert not supervisor.running


async def test_a_body_that_returns_is_restarted_too() -> None:
    time = FakeTime()
    body = ScriptedBody([None], time)
    restarts: list[None] = []
    supervisor = _supervisor(body, time, restarts)
    supervisor.start()
    await body.started[-1].wait()
    assert (body.runs, len(restarts)) == (2, 1)
    await supervisor.stop()


async def test_the_back_off_starts_over_after_a_healthy_run() -> None:
    time = FakeTime()
    # Two quick crashes, then one after a long healthy run, then a quick one again.
    body = ScriptedBody([RuntimeError("boom")] * 4, time, run_s=[0.0, 0.0, 100.0, 0.0, 0.0])
    restarts: list[None] = []
    supervisor = _supervisor(
        body, time, restarts, initial_backoff_s=1.0, max_backoff_s=30.0, healthy_after_s=60.0
    )
    supervisor.start()
    await body.started[-1].wait()
    assert time.sleeps == [1.0, 2.0, 1.0, 2.0]
    await supervisor.stop()


async def test_each_crash_is_logged_once_with_its_traceback(caplog) -> None:
    time = FakeTime()
    body = ScriptedBody([ValueError("first"), KeyError("second")], time)
    supervisor = _supervisor(body, time, [])
    with caplog.at_level(logging.ERROR, logger="paygate.supervisor"):
        supervisor.start()
        await body.started[-1].wait()
    await supervisor.stop()
    crashes = [r for r in caplog.records if r.name == "paygate.supervisor"]
    assert [type(r.exc_info[1]) for r in crashes if r.exc_info] == [ValueError, KeyError]
    assert len(crashes) == 2


async def test_stop_during_the_back_off_ends_it_without_a_restart() -> None:
    time = FakeTime()
    time.hold = asyncio.Event()  # never set: the back-off lasts until cancelled
    body = ScriptedBody([RuntimeError("boom")], time)
    restarts: list[None] = []
    supervisor = _supervisor(body, time, restarts)
    supervisor.start()
    await time.sleeping.wait()
    assert supervisor.running
    await supervisor.stop()
    assert (body.runs, restarts, supervisor.running) == (1, [], False)


async def test_stop_is_safe_before_start_and_twice() -> None:
    time = FakeTime()
    body = ScriptedBody([], time)
    supervisor = _supervisor(body, time, [])
    await supervisor.stop()
    supervisor.start()
    await body.started[0].wait()
    await supervisor.stop()
    await supervisor.stop()
    assert body.cancelled


async def test_a_second_start_is_refused() -> None:
    time = FakeTime()
    supervisor = _supervisor(ScriptedBody([], time), time, [])
    supervisor.start()
    with pytest.raises(RuntimeError, match="already started"):
        supervisor.start()
    await supervisor.stop()


def test_an_empty_back_off_range_is_refused() -> None:
    with pytest.raises(ValueError, match="back-off"):
        TaskSupervisor(lambda: asyncio.sleep(0), name="x", initial_backoff_s=0.0)
    with pytest.raises(ValueError, match="back-off"):
        TaskSupervisor(lambda: asyncio.sleep(0), name="x", initial_backoff_s=2.0, max_backoff_s=1.0)
