"""Runs jobs concurrently across keys, strictly in order within a key, up to a limit.

Each job is chained behind the previous job of its key, so two commands for one order
never run at once and run in offset order; jobs of different keys overlap freely. Jobs
are grouped (by partition) so a revoked partition's work can be drained or abandoned.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable


class KeyedWork:
    def __init__(
        self, max_in_flight: int, on_slot_freed: Callable[[], None] = lambda: None
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._max_in_flight = max_in_flight
        self._on_slot_freed = on_slot_freed
        self._tails: dict[Hashable, asyncio.Task[None]] = {}
        self._groups: defaultdict[Hashable, set[asyncio.Task[None]]] = defaultdict(set)
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def free(self) -> int:
        return max(self._max_in_flight - self._in_flight, 0)

    def submit(
        self, group: Hashable, key: Hashable, job: Callable[[], Awaitable[None]]
    ) -> asyncio.Task[None]:
        previous = self._tails.get(key)
        task = asyncio.create_task(self._run(previous, job))
        self._tails[key] = task
        self._groups[group].add(task)
        self._in_flight += 1
        task.add_done_callback(lambda t: self._forget(group, key, t))
        return task

    async def drain(self, groups: list[Hashable], timeout_s: float) -> int:
        """Wait up to ``timeout_s`` for the groups' jobs; cancel the rest; return how many."""
        tasks = {task for group in groups for task in self._groups.get(group, ())}
        if not tasks:
            return 0
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        return len(pending)

    def groups(self) -> list[Hashable]:
        return [group for group, tasks in self._groups.items() if tasks]

    @staticmethod
    async def _run(previous: asyncio.Task[None] | None, job: Callable[[], Awaitable[None]]) -> None:
        if previous is not None and not previous.done():
            # Wait for the key's previous job, whatever its fate: its failure is its own.
            await asyncio.wait([previous])
        await job()

    def _forget(self, group: Hashable, key: Hashable, task: asyncio.Task[None]) -> None:
        self._in_flight -= 1
        self._on_slot_freed()
        members = self._groups.get(group)
        if members is not None:
            members.discard(task)
            if not members:
                del self._groups[group]
        if self._tails.get(key) is task:
            del self._tails[key]
