"""Keeps one long-running coroutine alive: restarts it, with a bounded back-off, when it ends.

Invariants:

* At most one run of the body at a time, each in the supervisor's own task; none once
  :meth:`TaskSupervisor.stop` has returned.
* The body is meant to run until cancelled, so ending by any exception, or by returning,
  is a crash: it is logged once and the body is run again after a back-off.
* The back-off doubles after each crash, from ``initial_backoff_s`` up to
  ``max_backoff_s``, and starts over after a run that lasted ``healthy_after_s``: a body
  that fails at once is retried at most every ``max_backoff_s`` (no log or CPU flood),
  while a rare crash after a long healthy run is retried quickly.
* Cancellation is never swallowed: stopping cancels the run or the back-off in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("paygate.supervisor")


class TaskSupervisor:
    def __init__(
        self,
        body: Callable[[], Awaitable[None]],
        *,
        name: str,
        on_restart: Callable[[], None] = lambda: None,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        healthy_after_s: float = 60.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < initial_backoff_s <= max_backoff_s:
            raise ValueError("back-off must satisfy 0 < initial_backoff_s <= max_backoff_s")
        self._body = body
        self._name = name
        self._on_restart = on_restart
        self._initial_backoff_s = initial_backoff_s
        self._max_backoff_s = max_backoff_s
        self._healthy_after_s = healthy_after_s
        self._sleep = sleep
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Started and not stopped (the body may be between runs, backing off)."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError(f"{self._name} is already started")
        self._task = asyncio.create_task(self._supervise(), name=self._name)

    async def stop(self) -> None:
        """Cancel the run (or the back-off) and wait for it to end; safe to call twice."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _supervise(self) -> None:
        backoff_s = self._initial_backoff_s
        while True:
            started = self._clock()
            crash: Exception | None = None
            try:
                await self._body()
            except Exception as exc:
                crash = exc
            if self._clock() - started >= self._healthy_after_s:
                backoff_s = self._initial_backoff_s
            # One line per crash, with the traceback: crashes are rare (the back-off bounds
            # them) and an unexpected one is only diagnosable from its stack.
            log.error(
                "%s stopped; restarting in %.1fs",
                self._name,
                backoff_s,
                exc_info=crash,
                extra={"task": self._name, "backoff_s": backoff_s},
            )
            await self._sleep(backoff_s)
            backoff_s = min(backoff_s * 2, self._max_backoff_s)
            self._on_restart()
