"""Publishes outbox rows to Kafka and marks them published, while it holds the relay lease.

Every consumer process runs a relay over the shared store; only the one holding the lease
(:mod:`persistence.outbox_lease`) reads and publishes, so two relays never publish the same
rows. Before every batch the holder makes sure the lease is still its own (renewing it, or
trusting a renewal younger than the renew interval: see persistence.outbox_lease) and
publishes only if it is; the others try to take it every ``renew_interval_s``. On stop the holder
releases it, so another relay takes over at its next try.

Rows are published in id order, in batches, with an idempotent producer; a row is marked
only after Kafka acknowledged it. A crash between the two publishes the row again when the
next holder takes over: result events carry a stable event id, so readers drop the repeat.
A graceful stop is not such a crash: :meth:`OutboxRelay.finish` ends :meth:`OutboxRelay.run`
between passes, never between a batch's acknowledgement and its mark, so a service that
stops and starts again publishes each row once.

:meth:`OutboxRelay.is_ready` (the consumer's ``outbox_relay`` readiness check) is true
only while :meth:`OutboxRelay.run` runs and has finished a pass (a lease attempt, and as
holder a batch) within ``stall_after_s``: a relay stuck on an unreachable broker or
database, or failing pass after pass, stops being ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from persistence.outbox import PendingOutboxRow
from producer.kafka_producer import KafkaProducer
from telemetry.metrics import Metrics
from telemetry.outage_log import DEFAULT_SUMMARY_EVERY_S, DependencyOutages
from telemetry.trace_context import publishing

log = logging.getLogger("paygate.outbox")


class OutboxSource(Protocol):
    async def unpublished(self, limit: int) -> list[PendingOutboxRow]: ...

    async def mark_published(self, ids: list[int]) -> None: ...


class RelayLease(Protocol):
    holder: str

    async def acquire(self) -> bool:
        """Take or renew the lease; True if this relay holds it now."""
        ...

    async def release(self) -> None: ...


class OutboxRelay:
    def __init__(
        self,
        source: OutboxSource,
        producer: KafkaProducer,
        metrics: Metrics,
        lease: RelayLease,
        *,
        batch_size: int = 500,
        idle_poll_s: float = 0.5,
        renew_interval_s: float = 1.0,
        stall_after_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        unreachable: Callable[[BaseException], str | None] = lambda _exc: None,
        outage_summary_every_s: float = DEFAULT_SUMMARY_EVERY_S,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``unreachable`` names the dependency (``database``, ``kafka``) a failed pass
        says is down, or None when the failure is not known to be an outage; the
        composition root knows the drivers' errors, this module does not."""
        self._source = source
        self._producer = producer
        self._metrics = metrics
        self._lease = lease
        self._batch_size = batch_size
        # The holder polls for rows other processes committed (their notify never reaches
        # it), and renews the lease at each poll: at least every renew_interval_s.
        self._idle_poll_s = min(idle_poll_s, renew_interval_s)
        self._renew_interval_s = renew_interval_s
        self._holding = False
        self._wakeup = asyncio.Event()
        self._finishing = asyncio.Event()
        self._stall_after_s = stall_after_s
        self._clock = clock
        self._sleep = sleep
        # When run()'s last pass finished; None while run() is not running.
        self._last_pass: float | None = None
        # A relay retries a failed pass every few seconds for as long as a dependency is
        # down: logged when the outage starts and ends, with a summary between, not per try.
        self._outages = DependencyOutages(
            log,
            unreachable,
            fallback="a dependency of the outbox relay",
            summary_every_s=outage_summary_every_s,
            clock=clock,
        )

    @property
    def holding(self) -> bool:
        """Whether the last lease attempt found this relay the holder."""
        return self._holding

    async def is_ready(self) -> bool:
        """Running, and a pass finished within ``stall_after_s``."""
        last = self._last_pass
        return last is not None and self._clock() - last < self._stall_after_s

    def notify(self) -> None:
        """Tell the relay new rows were committed, so it does not wait for its next poll."""
        self._wakeup.set()

    async def publish_once(self) -> int:
        """Publish one batch if this relay holds the lease; return how many rows it published.

        The lease is renewed first, and the rows read after, so a relay that lost the lease
        while it was paused publishes nothing, not even rows it read before.
        """
        if not await self._hold_lease():
            return 0
        rows = await self._source.unpublished(self._batch_size)
        if not rows:
            return 0
        sends = []
        for row in rows:
            # The send (and its traceparent header) continues the trace that wrote the row.
            with publishing(row.traceparent):
                sends.append(
                    await self._producer.client.send(row.topic, row.payload, key=row.key.encode())
                )
        await asyncio.gather(*sends)
        await self._source.mark_published([row.id for row in rows])
        self._metrics.outbox_published.inc(len(rows))
        return len(rows)

    async def run(self) -> None:
        """Publish until cancelled; errors are logged and retried with a back-off."""
        self._last_pass = self._clock()
        try:
            await self._run()
        finally:
            self._last_pass = None

    async def _run(self) -> None:
        backoff = 0.1
        while not self._finishing.is_set():
            # Cleared before reading, so a notify that lands while we publish is kept.
            self._wakeup.clear()
            try:
                published = await self.publish_once()
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._outages.failed(exc)
                await self._sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            self._outages.succeeded()
            self._last_pass = self._clock()
            if not self._holding:
                # A standby: new rows are the holder's business, so notify does not wake it.
                await _wait_for(self._finishing, self._renew_interval_s)
            elif published < self._batch_size:
                await _wait_for(self._wakeup, self._idle_poll_s)

    def finish(self) -> None:
        """Make :meth:`run` return after the pass it is in, instead of being cancelled in it.

        A pass cancelled after Kafka acknowledged its batch and before the rows were marked
        leaves them unmarked: published again by :meth:`stop`'s drain or the next holder.
        """
        self._finishing.set()
        self._wakeup.set()

    async def drain(self) -> None:
        """Publish everything committed so far, if this relay holds (or gets) the lease."""
        while await self.publish_once() == self._batch_size:
            pass

    async def stop(self) -> None:
        """Drain, then release the lease so another relay takes over at once.

        Call once :meth:`run` has returned (after :meth:`finish`) or was cancelled; safe
        to call twice.
        """
        try:
            await self.drain()
        finally:
            self._holding = False
            await self._lease.release()

    async def _hold_lease(self) -> bool:
        held = await self._lease.acquire()
        if held != self._holding:
            if held:
                log.info("outbox relay holds the lease", extra={"holder": self._lease.holder})
            else:
                log.warning(
                    "outbox relay lost the lease; another relay publishes",
                    extra={"holder": self._lease.holder},
                )
        self._holding = held
        return held


async def _wait_for(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
