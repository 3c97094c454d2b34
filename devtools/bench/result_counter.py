"""Counts result events on the results topic, as a user of the pipeline would see them.

Only keys are looked at (one unique order id per payment), so counting costs the
pipeline under test, which shares this process and event loop, next to nothing, and a
re-published event is not counted twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from aiokafka import AIOKafkaConsumer

from devtools.bench.environment import BenchError


class ResultCounter:
    def __init__(self, kafka: Mapping[str, object], topic: str) -> None:
        self._topic = topic
        # No group: every partition from the start, nothing committed.
        self._consumer = AIOKafkaConsumer(
            topic,
            **kafka,
            group_id=None,
            client_id="paygate-bench-results",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        self._keys: set[bytes] = set()

    @property
    def seen(self) -> int:
        return len(self._keys)

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def wait_for(
        self,
        expected: int,
        *,
        stall_timeout_s: float,
        service: asyncio.Task[None],
        progress: Callable[[], str],
    ) -> float:
        """Read until ``expected`` distinct results are seen; return that moment's
        ``perf_counter``. Raises :class:`BenchError` when the service ends first or when
        nothing new arrives for ``stall_timeout_s``; ``progress`` describes the service's
        state for that message."""
        last_progress = time.monotonic()
        while self.seen < expected:
            if service.done():
                failure = None if service.cancelled() else service.exception()
                raise BenchError(
                    f"the consumer service stopped after {self.seen} of {expected} results "
                    f"on {self._topic}: {failure!r}; {progress()}"
                ) from failure
            batches = await self._consumer.getmany(timeout_ms=200)
            before = self.seen
            for records in batches.values():
                self._keys.update(record.key for record in records)
            if self.seen > before:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > stall_timeout_s:
                raise BenchError(
                    f"no new result on {self._topic} for {stall_timeout_s:g} s "
                    f"({self.seen} of {expected} seen); {progress()}"
                )
        return time.perf_counter()
