"""Group commit: concurrent callers' write operations share one database transaction.

The consumer runs up to ``max_in_flight`` payments at once, and each needs its writes
committed before it may go on (write-ahead before the provider call, outcome plus outbox
row before the offset commit). One transaction each costs a commit each; here, the
operations that arrive while a transaction is being written wait for the next one, and
then all commit together. Every caller still returns only after *its* operation is
durably committed: the semantics of one transaction per operation, at the cost of a few.

Bulk operations: an operation may come with a :class:`Bulk`, naming a function that runs
many operations of its kind at once (one ``SELECT ... IN``, multi-row INSERTs, one
executemany UPDATE) instead of a few statements each. When a batch holds two or more
operations of one kind, they run together, through that function, where the first of them
stands in the batch; alone, an operation runs its own function as before. The callers of a
batch all wait for it, so none of its operations happened before another: running a kind
together, ahead of operations that arrived between its members, is an order they could
have run in one at a time.

If an operation fails (a unique violation, a refused transition), or a bulk run does, the
batch is rolled back and its operations are run again one transaction each, each through
its own function, so the failure reaches only the caller whose operation caused it. If the
commit itself fails, every caller of that batch gets the error and none of their
operations took effect.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from opentelemetry.context import Context
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from persistence.engine import write_transaction
from telemetry.trace_context import captured, restored

T = TypeVar("T")
Operation = Callable[[AsyncConnection], Awaitable[Any]]
# Runs the items of many operations of one kind in the caller's transaction; returns one
# result per item, in the items' order.
BulkRun = Callable[[AsyncConnection, Sequence[Any]], Awaitable[Sequence[Any]]]


@dataclass(frozen=True, slots=True)
class Bulk:
    """How an operation runs together with others of its kind.

    Operations whose ``run_many`` are equal are of one kind; ``item`` is what this one
    contributes to the call. ``run_many`` must have the effect of running the operations'
    own functions one after another, in some order, and return what each would have.
    """

    run_many: BulkRun
    item: Any


@dataclass(slots=True)
class _Pending:
    operation: Operation
    bulk: Bulk | None
    future: asyncio.Future[Any]
    # The caller's trace context (None when tracing is off): its statements run in the
    # flusher's task, and are traced under the caller's span all the same.
    trace: Context | None


class GroupCommit:
    def __init__(self, engine: AsyncEngine, *, max_batch: int = 500) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._pending: deque[_Pending] = deque()
        self._flusher: asyncio.Task[None] | None = None

    async def run(
        self, operation: Callable[[AsyncConnection], Awaitable[T]], bulk: Bulk | None = None
    ) -> T:
        """Run ``operation`` in a shared write transaction; return once it is committed.

        With ``bulk``, the operation may instead run through ``bulk.run_many`` together
        with other operations of its kind in the same batch.
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(operation, bulk, future, captured()))
        if self._flusher is None or self._flusher.done():
            # The flusher exits when the queue is empty, so an idle store leaves no task.
            self._flusher = asyncio.create_task(self._flush_all(), name="group-commit")
        # A cancelled caller cancels its future: an operation not yet started is skipped.
        return await future

    async def _flush_all(self) -> None:
        while self._pending:
            batch: list[_Pending] = []
            while self._pending and len(batch) < self._max_batch:
                pending = self._pending.popleft()
                if not pending.future.done():
                    batch.append(pending)
            if batch:
                await self._flush(batch)

    async def _flush(self, batch: list[_Pending]) -> None:
        try:
            results = await self._run_together(batch)
        except _OperationFailed as failed:
            if len(batch) == 1:
                _settle(batch[0].future, error=failed.error)
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
            for pending in batch:
                _settle(pending.future, error=failure)
            if not isinstance(exc, Exception):
                raise
            return
        for pending, result in zip(batch, results, strict=True):
            _settle(pending.future, result=result)

    async def _run_together(self, batch: list[_Pending]) -> list[Any]:
        # No savepoint per operation: each would cost two more round trips, and failures
        # are rare (a lost insert race, a refused transition); they are handled by re-running
        # the batch one operation at a time.
        kinds: dict[BulkRun, list[int]] = {}
        for index, pending in enumerate(batch):
            if pending.bulk is not None:
                kinds.setdefault(pending.bulk.run_many, []).append(index)
        results: list[Any] = [None] * len(batch)
        # The transaction's own statements (BEGIN on SQLite) are traced under the first
        # caller's span, not under whoever's span started the flusher task.
        with restored(batch[0].trace):
            async with write_transaction(self._engine) as conn:
                for index, pending in enumerate(batch):
                    members = None if pending.bulk is None else kinds[pending.bulk.run_many]
                    try:
                        # A bulk run is traced under its first member's span.
                        with restored(pending.trace):
                            if members is None or len(members) == 1:
                                results[index] = await pending.operation(conn)
                            elif members[0] == index:
                                await self._run_bulk(conn, batch, members, results)
                        # else: run with the first of its kind
                    except Exception as exc:
                        raise _OperationFailed(exc) from exc
        return results

    @staticmethod
    async def _run_bulk(
        conn: AsyncConnection, batch: list[_Pending], members: list[int], results: list[Any]
    ) -> None:
        first = batch[members[0]].bulk
        assert first is not None  # only operations with a Bulk are grouped
        bulks = [batch[index].bulk for index in members]
        items = [bulk.item for bulk in bulks if bulk is not None]
        answers = await first.run_many(conn, items)
        if len(answers) != len(members):
            raise RuntimeError(f"a bulk run answered {len(answers)} of {len(members)} operations")
        for index, answer in zip(members, answers, strict=True):
            results[index] = answer


async def run_bulks(conn: AsyncConnection, bulks: Sequence[Bulk]) -> None:
    """Run ``bulks`` in the caller's transaction, each kind in one call of its function.

    For writes that must commit in the same transaction as the caller's own (and so
    cannot have been committed without it); their results are not needed.
    """
    kinds: dict[BulkRun, list[Any]] = {}
    for bulk in bulks:
        kinds.setdefault(bulk.run_many, []).append(bulk.item)
    for run_many, items in kinds.items():
        await run_many(conn, items)


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
