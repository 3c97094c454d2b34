"""Whether the consumer holds partitions, allowing a rebalance its time: readiness.

A consumer without partitions processes nothing: the group gave them all to others (more
consumers than partitions), or it is stuck outside the group. Briefly holding none is
normal (start-up, every rebalance), hence the grace period.

Invariant: :meth:`AssignmentWatch.is_ready` is true while the consumer holds at least one
partition, or has held none for less than ``grace_s``, counted from construction (the
runner's start) or from the rebalance that left it with none.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection


class AssignmentWatch:
    def __init__(self, grace_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._grace_s = grace_s
        self._clock = clock
        self._empty_since: float | None = clock()

    def changed(self, assignment: Collection[object]) -> None:
        """The consumer holds ``assignment`` now (called after every rebalance)."""
        if assignment:
            self._empty_since = None
        elif self._empty_since is None:
            self._empty_since = self._clock()

    async def is_ready(self) -> bool:
        empty_since = self._empty_since
        return empty_since is None or self._clock() - empty_since < self._grace_s
