"""Group commit: concurrent callers' write operations share one database transaction.

The consumer runs up to ``max_in_flight`` payments at once, and each needs its writes
committed before it may go on (write-ahead before the provider call, outcome plus outbox
row before the offset commit). One transaction each costs a commit each; here, the
operations that arrive while a transaction is being written wait for the next one, and
then all commit together. Every caller still returns only after *its* operation is
durably committed: the semantics of one transaction per operation, at the cost of a few.

If an operation fails (a unique violation, a refused transition), the batch is rolled back
and its operations are run again one transaction each, so the failure reaches only the
caller whose operation caused it. If the commit itself fails, every caller of that batch
gets the error and none of their operations took effect.
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
        try:
            results = await self._run_together(batch)
        except _OperationFailed as failed:
            if len(batch) == 1:
                _settle(batch[0][1], error=failed.error)
                return
            # Nothing of the batch was committed. Run each operation alone, so that the
            # failure stays with the operation that caused it.
            for item in batch:
                await self._flush([item])
            return
        except BaseException as exc:
            # The commit (or the transaction as a whole) failed: nothing of this batch
            # took effect, and every caller hears so.
            failure = exc if isinstance(exc, Exception) else RuntimeError("commit interrupted")
            for _, future in batch:
                _settle(future, error=failure)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result=result)

    async def _run_together(self, batch: list[tuple[Operation, asyncio.Future[Any]]]) -> list[Any]:
        # No savepoint per operation: each would cost two more round trips, and failures
        # are rare (a lost insert race, a refused transition); they are handled by re-running
        # the batch one operation at a time.
        results: list[Any] = []
        async with write_transaction(self._engine) as conn:
            for operation, _ in batch:
                try:
                    results.append(await operation(conn))
                except Exception as exc:
                    raise _OperationFailed(exc) from exc
        return results


class _OperationFailed(Exception):
    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _settle(
    future: asyncio.Future[Any], *, result: Any = None, error: Exception | None = None
) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)
