"""A writer queue that holds one write back until the test lets it go: a backed-up queue or
a stalled database, forced by hand, for interleavings that need a write to land late."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from persistence.group_commit import Bulk, GroupCommit
from persistence.lock_order import RowLocks


class HeldWrites(GroupCommit):
    """A writer queue whose write number ``held`` (0: its first) waits for ``release``
    before it is queued (``queued`` is set meanwhile)."""

    def __init__(self, engine: AsyncEngine, *, held: int) -> None:
        super().__init__(engine)
        self._held = held
        self._writes = 0
        self.queued = asyncio.Event()
        self.release = asyncio.Event()

    async def run(
        self,
        operation: Callable[[AsyncConnection], Awaitable[Any]],
        bulk: Bulk | None = None,
        *,
        locks: RowLocks | None = None,
    ) -> Any:
        index, self._writes = self._writes, self._writes + 1
        if index == self._held:
            self.queued.set()
            await self.release.wait()
        return await super().run(operation, bulk, locks=locks)
