"""At most one line per message template and period from a chatty library's loggers.

aiokafka logs every reconnection attempt while a broker is down, at error level: about 70
lines a second per process in a Kafka outage, each the same few templates ("Unable connect
to node with id %s: %s", "Unable to update metadata from %s"). A :class:`RepeatThrottle`
on the log handler lets the first record of each (logger, template) through, drops its
repeats for ``period_s``, and lets the next one through with ``repeated`` (how many were
dropped since) among its fields. paygate's own view of the outage is its OutageLog lines.

Records of loggers outside ``prefix`` pass untouched. Not thread-safe beyond what logging's
handler lock gives it (filters run under that lock).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

DEFAULT_PERIOD_S: Final = 60.0


class RepeatThrottle(logging.Filter):
    def __init__(
        self,
        prefix: str,
        *,
        period_s: float = DEFAULT_PERIOD_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        if not period_s > 0:
            raise ValueError(f"period_s must be positive, got {period_s!r}")
        self._prefix = prefix
        self._period_s = period_s
        self._clock = clock
        # (logger, template) -> [when it last passed, how many were dropped since]
        self._seen: dict[tuple[str, str], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if not (name == self._prefix or name.startswith(self._prefix + ".")):
            return True
        key = (name, str(record.msg))
        now = self._clock()
        seen = self._seen.get(key)
        if seen is None:
            self._seen[key] = [now, 0]
            return True
        if now - seen[0] < self._period_s:
            seen[1] += 1
            return False
        record.repeated = int(seen[1])
        seen[0], seen[1] = now, 0
        return True
