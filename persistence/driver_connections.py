"""Driver connections of their own for the facade's hot reads, outside SQLAlchemy's pool.

The raw reads (:mod:`persistence.raw_reads`) send one driver call per read, but each still
checked a connection out of the engine's pool and gave it back: on PostgreSQL the
checkout's pre-ping is a round trip of its own, on SQLite the return's rollback is one more
trip to aiosqlite's thread, and both are SQLAlchemy's Python around every read. Profiled,
that was most of what the raw reads still cost. Here the reads take a connection from a
small set kept for them alone.

Invariants:

* **Made like the pool's.** Each connection is opened by the engine's pool, so with the
  engine's connect arguments and its ``connect`` hooks (SQLite's pragmas and autocommit),
  and then detached from the pool: it never counts against the pool's size, and the
  pool neither pings it nor resets it.
* **One read at a time per connection** (asyncpg refuses a second operation on a
  connection that is busy): at most ``limit`` connections exist; a read beyond that waits
  for one to come back. Idle ones are reused most recently returned first.
* **No state carried between reads.** Only single ``SELECT`` statements run on them,
  outside any transaction (see :mod:`persistence.raw_reads`).
* **A broken connection is never handed out again.** One whose call failed, however, or
  was cancelled (the driver may still be busy with it), is ended: asyncpg's at once
  (``terminate``: nothing waits on a server that may not answer), aiosqlite's by its
  ``close`` (a local file; waited for, so its thread never answers a closed loop).
  A read that failed on a connection that had been idle is tried once more on a new one
  (it is one ``SELECT``, so trying it again changes nothing): that is what the pool's
  pre-ping did for a connection that died while idle (a PostgreSQL restart, a killed
  backend), so such a death costs no request a ``503``. A failure on a new connection is
  the caller's, unchanged: an outage
  (:func:`persistence.availability.is_database_unavailable`) is ``503
  service_unavailable`` in the facade, a bug (a missing table) stays a bug.
* :meth:`DriverConnections.close` closes them all; a connection in use then is closed when
  its read ends. Safe to call twice. Disposing of the engine also closes the idle ones
  (its ``engine_disposed`` hook), so a process or a test that only disposes of its engine
  leaves no aiosqlite thread behind (it is not a daemon thread: one left running would
  hold the interpreter at exit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.util import await_only

T = TypeVar("T")

log = logging.getLogger("paygate.db.reads")

# Enough for the reads a facade process has in flight at once (each takes a millisecond or
# less); beyond it reads queue for a connection rather than open more (a new PostgreSQL
# backend, a new aiosqlite thread).
DEFAULT_LIMIT: Final = 8


class _Held:
    """A detached connection: SQLAlchemy's handle (which closes it) and the driver's."""

    __slots__ = ("conn", "driver")

    def __init__(self, conn: AsyncConnection, driver: Any) -> None:
        self.conn = conn
        self.driver = driver


class DriverConnections:
    def __init__(self, engine: AsyncEngine, *, limit: int = DEFAULT_LIMIT) -> None:
        self._engine = engine
        self._slots = asyncio.Semaphore(limit)
        self._idle: list[_Held] = []
        self._closed = False
        event.listen(engine.sync_engine, "engine_disposed", self._stop_idle)

    async def run(self, call: Callable[[Any], Awaitable[T]]) -> T:
        """``call`` with a driver connection (see the module's docstring for errors)."""
        async with self._slots:
            held = self._take_idle()
            if held is None:
                return await self._call(await self._open(), call)
            try:
                return await self._call(held, call)
            except Exception as exc:
                # It may have died while idle: once more, on a new connection.
                log.debug(
                    "a read failed on an idle connection; tried again on a new one: %s",
                    type(exc).__name__,
                )
            return await self._call(await self._open(), call)

    async def _call(self, held: _Held, call: Callable[[Any], Awaitable[T]]) -> T:
        try:
            result = await call(held.driver)
        except BaseException:
            # Whatever failed, the connection's state is not known to be clean (asyncpg,
            # told of a server's shutdown between two reads, fails the next with a client
            # error, not an outage), and a cancelled call may still be running in the
            # driver; a new connection costs little next to a failed read.
            await _end(held.driver)
            raise
        await self._give_back(held)
        return result

    def _take_idle(self) -> _Held | None:
        while self._idle:
            held = self._idle.pop()
            # asyncpg knows without a round trip when the server closed the connection (its
            # socket saw the end); such a one is dropped here rather than failed on.
            is_closed = getattr(held.driver, "is_closed", None)
            if is_closed is None or not is_closed():
                return held
            _stop(held.driver)
        return None

    async def _open(self) -> _Held:
        conn = await self._engine.connect()
        try:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            raw.detach()
        except BaseException:
            await conn.close()
            raise
        return _Held(conn, driver)

    async def _give_back(self, held: _Held) -> None:
        if self._closed:
            await _close(held)
        else:
            self._idle.append(held)

    async def close(self) -> None:
        """Close every connection (see the module's docstring). Safe to call twice."""
        self._closed = True
        idle, self._idle = self._idle, []
        for held in idle:
            await _close(held)

    def _stop_idle(self, _engine: object) -> None:
        idle, self._idle = self._idle, []
        for held in idle:
            try:
                # In AsyncEngine.dispose's greenlet: the close can be waited for, so that
                # aiosqlite's thread ends while the event loop still takes its answer.
                await_only(held.driver.close())
            except Exception:
                _stop(held.driver)


async def _close(held: _Held) -> None:
    # A connection that died (the reason it is closed) may fail to close cleanly; it is
    # gone either way.
    with contextlib.suppress(Exception):
        await held.conn.close()


def _stop(driver: Any) -> None:
    # The drivers' synchronous ends: aiosqlite's ``stop`` (queues the close, ends its
    # thread), asyncpg's ``terminate`` (closes the socket).
    stop = getattr(driver, "stop", None) or getattr(driver, "terminate", None)
    if stop is not None:
        with contextlib.suppress(Exception):
            stop()


async def _end(driver: Any) -> None:
    """End a connection that failed: see the module's docstring."""
    terminate = getattr(driver, "terminate", None)
    if terminate is not None:
        _stop(driver)
        return
    with contextlib.suppress(Exception):
        await driver.close()
