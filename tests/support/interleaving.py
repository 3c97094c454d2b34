"""Deterministic interleavings of concurrent workers, for concurrency tests without sleeps.

Each worker runs in a task of its own and stops at *checkpoints* (the await points that
matter: before every store write, when a provider call is sent, when its answer is back).
Only one worker runs at a time: it runs until its next checkpoint (or its end), then the
schedule names the worker to resume next. A schedule is a sequence of worker indexes; the
same schedule always gives the same interleaving, so a failure names the schedule that
produced it.

:func:`bounded_schedules` enumerates every schedule with at most ``switches`` preemptions
(the CHESS approach: most concurrency bugs need only one or two badly placed switches).

A :class:`StopSchedule` places the switches by where the workers stop instead of by how many
steps they took: each of its phases runs one worker until it parks at a checkpoint whose
label names a given stop (the claim taken, its renewal, a call sent, the record), so that a
search draws the few switches that matter from a handful of stops, whatever else (another
candidate's checks, say) a worker passes first.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import random
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

_worker: contextvars.ContextVar[int | None] = contextvars.ContextVar("worker", default=None)


class Interleaving:
    """``on_step`` is called before every resumption (e.g. to move a fake clock);
    ``observe`` is awaited at every quiet point, all workers parked or done and none inside
    a store write, e.g. to check an invariant of the shared state between any two steps."""

    def __init__(
        self,
        schedule: Sequence[int] | StopSchedule,
        on_step: Callable[[], None] | None = None,
        observe: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._schedule = schedule if isinstance(schedule, StopSchedule) else list(schedule)
        self._on_step = on_step
        self._observe = observe
        self._parked: dict[int, asyncio.Future[None]] = {}
        self._parked_at: dict[int, str] = {}
        self._changed = asyncio.Event()
        self.trace: list[tuple[int, str]] = []

    async def checkpoint(self, label: str) -> None:
        """Park the calling worker until the schedule resumes it (no-op outside a worker)."""
        worker = _worker.get()
        if worker is None:
            return
        parked = asyncio.get_running_loop().create_future()
        self._parked[worker] = parked
        self._parked_at[worker] = label
        self.trace.append((worker, label))
        self._changed.set()
        await parked

    def parked_at(self, worker: int) -> str | None:
        """The label of the checkpoint ``worker`` is parked at; None if it is not parked."""
        return self._parked_at.get(worker) if worker in self._parked else None

    async def run(self, workers: Sequence[Callable[[], Awaitable[Any]]]) -> list[Any]:
        """Run the workers under the schedule; return their results (or exceptions)."""
        tasks = []
        for index, work in enumerate(workers):
            context = contextvars.copy_context()
            context.run(_worker.set, index)
            task = asyncio.get_running_loop().create_task(_call(work), context=context)
            task.add_done_callback(lambda _t: self._changed.set())
            tasks.append(task)
        try:
            await self._follow(tasks)
        finally:
            # Only if an observer raised: no worker is left parked forever.
            for task in tasks:
                task.cancel()
        return [task.result() for task in tasks]

    async def _follow(self, tasks: list[asyncio.Task[Any]]) -> None:
        decisions = (
            self._schedule.decisions(self)
            if isinstance(self._schedule, StopSchedule)
            else iter(self._schedule)
        )
        while True:
            await self._quiet(tasks)
            if self._observe is not None:
                await self._observe()
            if not self._parked:
                return
            wanted = next(decisions, None)
            order = sorted(self._parked)
            # The named worker if it is parked; else the next parked one after it.
            chosen = (
                order[0] if wanted is None else next((w for w in order if w >= wanted), order[0])
            )
            if self._on_step is not None:
                self._on_step()
            self._parked.pop(chosen).set_result(None)

    async def _quiet(self, tasks: list[asyncio.Task[Any]]) -> None:
        """Wait until every worker is parked at a checkpoint or done."""
        while not all(t.done() or i in self._parked for i, t in enumerate(tasks)):
            self._changed.clear()
            await self._changed.wait()


async def _call(work: Callable[[], Awaitable[Any]]) -> Any:
    try:
        return await work()
    except Exception as exc:  # reported to the test, which asserts no worker raised
        return exc


@dataclass(frozen=True, slots=True)
class StopSchedule:
    """Decisions by stop: each phase ``(worker, stop)`` resumes ``worker`` until it parks at
    a checkpoint whose label contains ``stop``, or ends (a stop no label contains: it runs
    to its end); then the next phase. After the last, as after a plain schedule: the lowest
    parked worker runs to its end, then the next. ``on_phase`` is called with each phase's
    index as it begins (before its first resumption), e.g. to move a fake clock past a
    lease while a worker is stopped."""

    phases: Sequence[tuple[int, str]]
    on_phase: Callable[[int], None] | None = None

    def decisions(self, interleaving: Interleaving) -> Iterator[int]:
        for index, (worker, stop) in enumerate(self.phases):
            if self.on_phase is not None:
                self.on_phase(index)
            while True:
                yield worker
                at = interleaving.parked_at(worker)
                if at is None or stop in at:
                    break


def bounded_schedules(workers: int, length: int, switches: int) -> Iterator[tuple[int, ...]]:
    """Every schedule of ``length`` decisions over ``workers`` with at most ``switches``
    changes of worker, each once."""
    for count in range(switches + 1):
        for points in itertools.combinations(range(1, length), count):
            for first in range(workers):
                for others in itertools.product(range(workers), repeat=count):
                    seq = [first, *others]
                    if any(a == b for a, b in itertools.pairwise(seq)):
                        continue
                    schedule: list[int] = []
                    bounds = [0, *points, length]
                    for worker, (start, end) in zip(seq, itertools.pairwise(bounds), strict=True):
                        schedule.extend([worker] * (end - start))
                    yield tuple(schedule)


def random_schedules(
    workers: int, length: int, count: int, *, seed: int
) -> Iterator[tuple[int, ...]]:
    """``count`` schedules of ``length`` decisions drawn at random, from ``seed`` so that a
    failure names a reproducible schedule (for more workers than enumeration affords)."""
    rng = random.Random(seed)
    for _ in range(count):
        yield tuple(rng.randrange(workers) for _ in range(length))


class Gate:
    """Where long-lived collaborators (stores, a provider) stop: at the checkpoints of the
    interleaving under way, if there is one. Between interleaved runs, and in workers that
    are not interleaved, a checkpoint does nothing."""

    def __init__(self) -> None:
        self.interleaving: Interleaving | None = None

    async def checkpoint(self, label: str) -> None:
        if self.interleaving is not None:
            await self.interleaving.checkpoint(label)
