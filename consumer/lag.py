"""Consumer lag: how many commands of each assigned partition are not committed yet.

Lag of a partition = its last stable offset (LSO: the end of what a ``read_committed``
reader may see) minus the group's committed offset (where a restarted consumer resumes);
a partition the group never committed counts from its first offset, where
``auto_offset_reset="earliest"`` starts it. Commands in flight are part of the lag: they
are not durably handled until committed.

The end is asked of the broker (a ListOffsets request, which under ``read_committed``
answers the LSO) at every sample, rather than read from aiokafka's cached
``last_stable_offset()``/``highwater()``: those are only refreshed by fetches, and the
runner pauses its partitions at capacity, just when the lag grows.

Invariants: every sample reports exactly the partitions assigned now (series of
partitions given away are removed, so sums over consumers count each partition once),
and a lag is never negative.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from aiokafka import TopicPartition

from telemetry.metrics import Metrics


class OffsetSource(Protocol):
    """What of ``AIOKafkaConsumer`` the lag needs."""

    def assignment(self) -> set[TopicPartition]: ...

    async def end_offsets(self, partitions: list[TopicPartition]) -> Mapping[TopicPartition, int]:
        """The last stable offset under ``read_committed``."""
        ...

    async def beginning_offsets(
        self, partitions: list[TopicPartition]
    ) -> Mapping[TopicPartition, int]: ...

    async def committed(self, partition: TopicPartition) -> int | None: ...


def partition_lag(end: int, committed: int | None, beginning: int) -> int:
    """Commands from the resume point to the end; never negative."""
    resume_at = committed if committed is not None else beginning
    return max(0, end - resume_at)


class ConsumerLag:
    def __init__(self, source: OffsetSource, metrics: Metrics) -> None:
        self._source = source
        self._metrics = metrics
        self._reported: set[TopicPartition] = set()

    async def sample(self) -> dict[TopicPartition, int]:
        """Ask the broker, set the gauges, and return the lag of each assigned partition."""
        assigned = sorted(self._source.assignment())
        lags: dict[TopicPartition, int] = {}
        if assigned:
            ends = await self._source.end_offsets(assigned)
            committed = {tp: await self._source.committed(tp) for tp in assigned}
            never = [tp for tp, offset in committed.items() if offset is None]
            beginnings = await self._source.beginning_offsets(never) if never else {}
            lags = {
                tp: partition_lag(ends[tp], committed[tp], beginnings.get(tp, 0))
                for tp in assigned
                if tp in ends
            }
        self._report(lags, len(assigned))
        return lags

    def clear(self) -> None:
        """Report no partition: the consumer stopped and holds none."""
        self._report({}, 0)

    def _report(self, lags: Mapping[TopicPartition, int], assigned: int) -> None:
        gauge = self._metrics.consumer_lag
        for tp in self._reported - set(lags):
            gauge.remove(tp.topic, str(tp.partition))
        for tp, lag in lags.items():
            gauge.labels(tp.topic, str(tp.partition)).set(lag)
        self._reported = set(lags)
        self._metrics.assigned_partitions.set(assigned)
