"""Which offset of a partition may be committed, when messages finish out of order.

Messages of one partition run concurrently (different keys), so they finish out of order.
The committed offset must never pass a message that is not done: it is the lowest offset
still in flight, or one past the highest offset seen when nothing is in flight.
"""

from __future__ import annotations

from collections import deque


class PartitionOffsets:
    def __init__(self) -> None:
        self._in_order: deque[int] = deque()  # offsets started, oldest first
        self._done: set[int] = set()  # finished offsets not yet at the head
        self._next_after_seen: int | None = None
        self._committed: int | None = None

    def started(self, offset: int) -> None:
        if self._in_order and offset <= self._in_order[-1]:
            raise ValueError(f"offset {offset} started after {self._in_order[-1]}")
        self._in_order.append(offset)
        self._next_after_seen = offset + 1

    def finished(self, offset: int) -> None:
        self._done.add(offset)
        while self._in_order and self._in_order[0] in self._done:
            self._done.discard(self._in_order.popleft())

    @property
    def in_flight(self) -> int:
        return len(self._in_order)

    def committable(self) -> int | None:
        """The offset to commit now (the next one to read), or None if nothing has changed."""
        candidate = self._in_order[0] if self._in_order else self._next_after_seen
        if candidate is None or candidate == self._committed:
            return None
        return candidate

    def committed(self, offset: int) -> None:
        self._committed = offset
