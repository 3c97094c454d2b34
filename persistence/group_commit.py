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

Locks: an operation declares the rows it locks (a :class:`persistence.lock_order.RowLocks`),
and the transaction takes all of its batch's before the first operation runs, in the one
global order of persistence.lock_order, whatever order the operations come in. So two
processes' batches over the same rows queue on each other instead of deadlocking.

If an operation fails (a unique violation, a refused transition), or a bulk run does, the
batch is rolled back and its operations are run again one transaction each, each through
its own function, so the failure reaches only the caller whose operation caused it. An
operation run alone that PostgreSQL aborted to break a deadlock (SQLSTATE 40P01) or a
serialization conflict (40001) is run again, a few times, in a fresh transaction: the
aborted one was rolled back whole, so nothing of it took effect. If the commit itself
fails, every caller of that batch gets the error and none of their operations took effect,
unless the failure is one of those two aborts: then, as nothing was committed, the batch
is run again one operation at a time.

Lock times: each transaction reports to a :class:`WriteLockObserver`, once, how long it
waited for its locks (on SQLite the database's one write lock, taken at ``BEGIN
IMMEDIATE``; on PostgreSQL the lock order) and how long it then held them, to its commit's
end. On SQLite every other writer of the file waits while one holds the lock.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from opentelemetry.context import Context
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from persistence.engine import write_connection
from persistence.lock_order import RowLocks, take_locks
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
    ``locks``: what the item's write locks, for a bulk run inside another operation
    (:func:`run_bulks`, a payment begin's ``along``), whose declaration must include it.
    """

    run_many: BulkRun
    item: Any
    locks: RowLocks | None = None


@dataclass(slots=True)
class _Pending:
    operation: Operation
    bulk: Bulk | None
    future: asyncio.Future[Any]
    # The caller's trace context (None when tracing is off): its statements run in the
    # flusher's task, and are traced under the caller's span all the same.
    trace: Context | None
    # What the operation locks, taken for the whole batch first (persistence.lock_order).
    locks: RowLocks | None = None


class WriteLockObserver(Protocol):
    def write_lock_timed(self, dialect: str, waited_s: float, held_s: float) -> None:
        """One writer-queue transaction on ``dialect`` waited ``waited_s`` for its locks
        and held them ``held_s``, to the end of its commit or rollback."""


class GroupCommit:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_batch: int = 500,
        lock_observer: WriteLockObserver | None = None,
    ) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._lock_observer = lock_observer
        self._pending: deque[_Pending] = deque()
        self._flusher: asyncio.Task[None] | None = None

    @property
    def engine(self) -> AsyncEngine:
        """The database written: for a read that finds which rows a write is to declare."""
        return self._engine

    async def run(
        self,
        operation: Callable[[AsyncConnection], Awaitable[T]],
        bulk: Bulk | None = None,
        *,
        locks: RowLocks | None = None,
    ) -> T:
        """Run ``operation`` in a shared write transaction; return once it is committed.

        With ``bulk``, the operation may instead run through ``bulk.run_many`` together
        with other operations of its kind in the same batch. ``locks``: the payment and
        refund rows (and orders) the operation locks; every operation that locks any must
        name them (persistence.lock_order).
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(operation, bulk, future, captured(), locks))
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

    async def _flush(self, batch: list[_Pending], aborts: int = 0) -> None:
        try:
            results = await self._run_together(batch)
        except _OperationFailed as failed:
            if len(batch) == 1:
                if is_concurrency_abort(failed.error) and aborts < CONCURRENCY_ABORT_RETRIES:
                    # Rolled back whole by the database to break a conflict: run it again.
                    await self._flush(batch, aborts + 1)
                    return
                _settle(batch[0].future, error=failed.error)
                return
            # Nothing of the batch was committed. Run each operation alone, so that the
            # failure stays with the operation that caused it.
            for item in batch:
                await self._flush([item])
            return
        except Exception as exc:
            # The commit (or the transaction as a whole) failed: nothing of this batch
            # took effect, and every caller hears so, unless it can simply run again.
            if is_concurrency_abort(exc) and aborts < CONCURRENCY_ABORT_RETRIES:
                # The commit was refused with one of those aborts: nothing was committed.
                for item in batch:
                    await self._flush([item], aborts + 1)
                return
            for pending in batch:
                _settle(pending.future, error=exc)
            return
        except BaseException:
            # Interrupted (cancelled): nothing of this batch is known committed, and every
            # caller hears so.
            for pending in batch:
                _settle(pending.future, error=RuntimeError("commit interrupted"))
            raise
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
            async with write_connection(self._engine) as conn:
                asked = time.perf_counter()
                held_from: float | None = None
                try:
                    async with conn.begin():
                        try:
                            locks = RowLocks.union(pending.locks for pending in batch)
                            await take_locks(conn, locks)
                        except Exception as exc:
                            raise _OperationFailed(exc) from exc
                        held_from = time.perf_counter()
                        await self._run_operations(conn, batch, kinds, results)
                finally:
                    if held_from is not None and self._lock_observer is not None:
                        self._lock_observer.write_lock_timed(
                            conn.dialect.name, held_from - asked, time.perf_counter() - held_from
                        )
        return results

    async def _run_operations(
        self,
        conn: AsyncConnection,
        batch: list[_Pending],
        kinds: dict[BulkRun, list[int]],
        results: list[Any],
    ) -> None:
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


# How many times an operation run alone is run again after a deadlock or serialization abort.
# With every writer taking its locks in one order (persistence.lock_order) a deadlock
# should not happen at all; a few more tries cover writers outside that order.
CONCURRENCY_ABORT_RETRIES = 3
# PostgreSQL's SQLSTATEs for a transaction it rolled back to resolve a conflict between
# transactions: deadlock_detected and serialization_failure.
_CONCURRENCY_ABORTS = frozenset({"40P01", "40001"})


def is_concurrency_abort(exc: BaseException) -> bool:
    """Whether ``exc`` is the database rolling a transaction back to break a deadlock or a
    serialization conflict: nothing of it took effect, and running it again is safe."""
    if not isinstance(exc, DBAPIError):
        return False
    original = exc.orig
    code = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    return code in _CONCURRENCY_ABORTS


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
