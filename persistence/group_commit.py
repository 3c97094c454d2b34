"""Group commit: concurrent callers' write operations share one database transaction.

The consumer runs up to ``max_in_flight`` payments at once, and each needs its writes
committed before it may go on (write-ahead before the provider call, outcome plus outbox
row before the offset commit). One transaction each costs a commit each; here, the
operations that arrive while a transaction is being written wait for the next one, and
then all commit together. Every caller still returns only after *its* operation is
durably committed: the semantics of one transaction per operation, at the cost of a few.

Each operation runs inside a savepoint, so one that fails (a unique violation, a refused
transition) is rolled back alone and its caller gets the exception; the others commit.
If the commit itself fails, every caller of that batch gets the error and none of their
operations took effect.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from persistence.engine import write_transaction

T = TypeVar("T")
Operation = Callable[[AsyncConnection], Awaitable[Any]]


class GroupCommit:
    def __init__(self, engine: AsyncEngine, *, max_batch: int = 500) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._pending: deque[tuple[Operation, asyncio.Future[Any]]] = deque()
        self._flusher: asyncio.Task[None] | None = None

    async def run(self, operation: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``operation`` in a shared write transaction; return once it is committed."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((operation, future))
        if self._flusher is None or self._flusher.done():
            # The flusher exits when the queue is empty, so an idle store leaves no task.
            self._flusher = asyncio.create_task(self._flush_all(), name="group-commit")
        # A cancelled caller cancels its future: an operation not yet started is skipped.
        return await future

    async def _flush_all(self) -> None:
        while self._pending:
            batch: list[tuple[Operation, asyncio.Future[Any]]] = []
            while self._pending and len(batch) < self._max_batch:
                operation, future = self._pending.popleft()
                if not future.done():
                    batch.append((operation, future))
            if batch:
                await self._flush(batch)

    async def _flush(self, batch: list[tuple[Operation, asyncio.Future[Any]]]) -> None:
        outcomes: list[tuple[asyncio.Future[Any], Any, Exception | None]] = []
        try:
            async with write_transaction(self._engine) as conn:
                for operation, future in batch:
                    try:
                        async with conn.begin_nested():
                            outcomes.append((future, await operation(conn), None))
                    except Exception as exc:
                        outcomes.append((future, None, exc))
        except BaseException as exc:
            # The commit (or the transaction as a whole) failed: nothing of this batch
            # took effect, and every caller hears so.
            failure = exc if isinstance(exc, Exception) else RuntimeError("commit interrupted")
            for _, future in batch:
                if not future.done():
                    future.set_exception(failure)
            if not isinstance(exc, Exception):
                raise
            return
        for future, result, error in outcomes:
            if future.done():
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
