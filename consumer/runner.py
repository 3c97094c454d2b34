"""The Kafka side of the consumer: fetch, dispatch by key, commit what is finished.

* Within a partition, messages with different keys (order ids) run concurrently, up to
  ``max_in_flight`` in all; messages with the same key run strictly in offset order.
* The committed offset of a partition is the lowest offset still in flight (or one past
  the last seen): it never passes a message that is not durably handled, i.e. whose
  outcome is not committed to the store or that is not written to the dead-letter topic.
* A message whose handling fails is retried in place with a back-off; its key waits behind
  it, and the offset does not move past it. Retries are bounded for failures that may be
  the message's own (consumer.record_handling): after ``max_handling_attempts`` tries, or
  at once for a value the database refuses, it goes to the dead-letter topic and the
  offset moves on. Only failures that are not its own (database or broker down) are
  retried without limit.
* At capacity the runner pauses its partitions but keeps polling, so slow processing never
  exceeds ``max.poll.interval.ms`` and never makes the consumer leave its group.
* When partitions are revoked (or on shutdown) it stops taking their messages, lets work in
  flight finish within ``drain_timeout_s``, abandons the rest (to be redelivered to the
  next owner, where the store makes the replay harmless) and commits what is done.
* For operators it reports, at every scrape, the age of the oldest message in its hands,
  and per message the time from its Kafka timestamp to its durable outcome; after every
  rebalance it tells ``on_assignment`` which partitions it holds now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from consumer.key_ordering import KeyedWork
from consumer.offsets import PartitionOffsets
from consumer.record_handling import CommandDecoder, CommandHandler, DeadLetters, RecordHandling
from telemetry.metrics import Metrics
from telemetry.trace_context import processing

log = logging.getLogger("paygate.consumer")


class CommandRunner:
    def __init__(
        self,
        *,
        consumer: AIOKafkaConsumer,
        topic: str,
        messages: CommandDecoder,
        handler: CommandHandler,
        dead_letters: DeadLetters,
        metrics: Metrics,
        after_work: Callable[[], None] = lambda: None,
        on_assignment: Callable[[frozenset[TopicPartition]], None] = lambda _: None,
        max_in_flight: int = 100,
        commit_interval_s: float = 0.2,
        drain_timeout_s: float = 10.0,
        max_retry_backoff_s: float = 5.0,
        max_handling_attempts: int = 8,
        learn_writer: Callable[[bytes], Awaitable[None]] | None = None,
    ) -> None:
        self._consumer = consumer
        self._topic = topic
        self._handling = RecordHandling(
            messages=messages,
            handler=handler,
            dead_letters=dead_letters,
            max_attempts=max_handling_attempts,
            max_backoff_s=max_retry_backoff_s,
            learn_writer=learn_writer,
        )
        self._metrics = metrics
        self._after_work = after_work
        self._on_assignment = on_assignment
        # Monotonic start time of every message in flight, in the order they started: the
        # first entry is the oldest (a dict keeps insertion order through deletions).
        self._started_at: dict[tuple[TopicPartition, int], float] = {}
        metrics.oldest_in_flight_age.set_function(self._oldest_in_flight_age)
        self._slot_freed = asyncio.Event()
        self._work = KeyedWork(max_in_flight, on_slot_freed=self._slot_freed.set)
        self._offsets: dict[TopicPartition, PartitionOffsets] = {}
        self._commit_interval_s = commit_interval_s
        self._drain_timeout_s = drain_timeout_s
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Stop fetching; :meth:`run` then drains, commits and returns."""
        self._stopping.set()

    async def run(self) -> None:
        self._consumer.subscribe([self._topic], listener=_Rebalance(self))
        last_commit = time.monotonic()
        try:
            while not self._stopping.is_set():
                self._apply_backpressure()
                if self._work.free == 0:
                    # Wake as soon as a slot frees, not at the next poll; polling still
                    # happens at least every 100 ms (below, with nothing to wait for).
                    self._slot_freed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._slot_freed.wait(), 0.1)
                    self._apply_backpressure()
                batches = await self._consumer.getmany(
                    timeout_ms=100 if self._work.free else 0,
                    max_records=max(self._work.free, 1),
                )
                for tp, records in batches.items():
                    for record in records:
                        self._start(tp, record)
                if time.monotonic() - last_commit >= self._commit_interval_s:
                    await self._commit(list(self._offsets))
                    last_commit = time.monotonic()
        finally:
            await self._release(list(self._offsets), self._drain_timeout_s)

    def _apply_backpressure(self) -> None:
        # Pausing (rather than not polling) keeps the group membership alive.
        if self._work.free == 0:
            self._consumer.pause(*self._consumer.assignment())
        elif self._consumer.paused():
            self._consumer.resume(*self._consumer.paused())

    def _start(self, tp: TopicPartition, record: ConsumerRecord) -> None:
        offsets = self._offsets.setdefault(tp, PartitionOffsets())
        offsets.started(record.offset)
        self._metrics.in_flight.inc()
        self._started_at[(tp, record.offset)] = time.monotonic()
        # Messages without a key have no order to keep: each is its own key.
        key = (tp, record.key if record.key is not None else f"offset:{record.offset}")
        self._work.submit(tp, key, lambda: self._process(tp, record))

    async def _process(self, tp: TopicPartition, record: ConsumerRecord) -> None:
        try:
            # The span's parent is the traceparent in the record's headers (when tracing).
            with processing(record.topic, record.partition, record.offset, record.headers):
                await self._handling.handle(record)
        finally:
            self._metrics.in_flight.dec()
            self._started_at.pop((tp, record.offset), None)
        # Not reached when cancelled: an abandoned message must stay uncommitted.
        self._metrics.command_seconds.observe(max(0.0, time.time() - record.timestamp / 1000))
        offsets = self._offsets.get(tp)
        if offsets is not None:
            offsets.finished(record.offset)
        self._after_work()

    def _oldest_in_flight_age(self) -> float:
        oldest = next(iter(self._started_at.values()), None)
        return 0.0 if oldest is None else time.monotonic() - oldest

    async def _commit(self, partitions: list[TopicPartition]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for tp in partitions:
            tracker = self._offsets.get(tp)
            committable = None if tracker is None else tracker.committable()
            if committable is not None:
                offsets[tp] = committable
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:
            # A rebalance or a broker restart: the next commit (or the next owner's
            # redelivery, which the store makes harmless) covers it.
            log.warning("offset commit failed: %s", exc)
            return
        for tp, offset in offsets.items():
            # The partition may have been revoked (its tracker dropped) while the commit
            # was awaited: the commit stands, and there is nothing left to record it on.
            tracker = self._offsets.get(tp)
            if tracker is not None:
                tracker.committed(offset)

    async def partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._metrics.partitions_revoked.inc(len(revoked))
        self._on_assignment(frozenset(self._consumer.assignment()) - frozenset(revoked))
        await self._release(list(revoked), self._drain_timeout_s)

    def partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # Fresh trackers start from the first message the new assignment delivers.
        for tp in assigned:
            self._offsets.pop(tp, None)
        # aiokafka's rebalances are eager: ``assigned`` is the whole new assignment.
        self._on_assignment(frozenset(assigned))

    async def _release(self, partitions: list[TopicPartition], timeout_s: float) -> None:
        """Finish or abandon the partitions' work, commit what is done, forget them."""
        abandoned = await self._work.drain(list(partitions), timeout_s)
        if abandoned:
            self._metrics.abandoned.inc(abandoned)
            log.warning(
                "abandoned in-flight messages; they will be redelivered",
                extra={"abandoned": abandoned, "partitions": [str(tp) for tp in partitions]},
            )
        await self._commit(partitions)
        for tp in partitions:
            self._offsets.pop(tp, None)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: CommandRunner) -> None:
        self._runner = runner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._runner.partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._runner.partitions_assigned(assigned)
