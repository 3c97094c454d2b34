"""When a webhook delivery is tried again: exponential back-off with jitter, for a window.

A delivery's attempts follow one another at ``base * 2**(n-1)`` seconds (capped), each
delay multiplied by a random factor in ``[1 - jitter, 1 + jitter]`` so that the deliveries
of a receiver that was down do not all come back at the same instant. Invariant: a
delivery that keeps failing is tried until ``window`` after it was created and at least
once at (or after) that moment, never given up earlier, whatever the jitter drew: the last
delay is cut to land on the window's end, and only an attempt failing at or after it gives
up. With the defaults (24 h), a receiver that is down for up to a day still gets every
event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base: timedelta = timedelta(seconds=10)
    cap: timedelta = timedelta(hours=4)
    window: timedelta = timedelta(hours=24)
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not (self.base > timedelta(0) and self.cap >= self.base and 0 <= self.jitter < 1):
            raise ValueError("retry policy needs 0 < base <= cap and 0 <= jitter < 1")

    def next_attempt(
        self,
        *,
        created_at: datetime,
        failed_at: datetime,
        attempts: int,
        uniform: Callable[[float, float], float],
    ) -> datetime | None:
        """When to try a delivery again after its ``attempts``-th attempt failed at
        ``failed_at``; None: give up (the window is over). ``uniform(a, b)`` draws the
        jitter (``random.uniform`` in production, a fixed draw in tests)."""
        deadline = created_at + self.window
        if failed_at >= deadline:
            return None
        exponent = min(max(attempts - 1, 0), 40)  # 2**40 * base is past any cap
        delay: timedelta = min(self.base * (2**exponent), self.cap)
        delay = delay * uniform(1 - self.jitter, 1 + self.jitter)
        due: datetime = min(failed_at + delay, deadline)
        return due
