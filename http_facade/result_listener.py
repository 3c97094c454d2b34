"""Lets a facade request wait for its payment's result, on any facade instance, and keeps
listening whatever the results topic holds and whatever the consumer raises.

The store stays the source of truth: the listener only says "a final result exists", and
the request then reads the payment from the store. The parts: a feed of raw records
(:mod:`http_facade.result_feed`, the only Kafka code), what a record means
(:mod:`http_facade.result_events`), the waiting requests
(:mod:`http_facade.result_waiters`) and the restarts (:mod:`http_facade.task_supervisor`).

Invariants:

* A bad record costs that record only: it is counted, logged and skipped.
* A broken feed (the consumer raises) ends the run; a new feed is opened after a bounded
  back-off, and the restart counted in ``paygate_result_listener_restarts_total``. A new
  feed starts at the end of the topic, so the waiters then re-check the store, where a
  result published while nobody listened is found.
* :meth:`ResultListener.is_ready` is true only while a feed is open and read: not before
  start, after stop, nor during a back-off or a reconnect.
* A writer schema id the process has not seen (a newer paygate registered a new version in
  the Schema Registry) is fetched before the record is decoded, once: the source keeps it
  (:mod:`schemas.registry_schemas`). Ids already known never need the registry, so an
  outage after start-up changes nothing for them. While the registry cannot answer, a
  record with a new id is skipped like any undecodable one, the rest of its batch is not
  made to wait on the registry again, and the waiting requests re-check the store, where
  that result is: a request waits no longer for an outage than for a reconnect.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager

from http_facade.result_events import PaymentEvents, ResultDecoder, ResultRecord
from http_facade.result_feed import ResultFeed
from http_facade.result_waiters import PaymentLookup, RefundLookup, ResultWaiters, Watch
from http_facade.task_supervisor import TaskSupervisor
from schemas.registry_schemas import SchemaSourceUnavailable
from telemetry.metrics import Metrics

log = logging.getLogger("paygate.http.results")

OpenFeed = Callable[[], Awaitable[ResultFeed]]


class ResultListener:
    def __init__(
        self,
        *,
        open_feed: OpenFeed,
        decoder: ResultDecoder,
        queries: PaymentLookup,
        refunds: RefundLookup,
        metrics: Metrics,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._open_feed = open_feed
        self._waiters = ResultWaiters(queries=queries, refunds=refunds)
        self._events = PaymentEvents(
            decoder=decoder,
            on_final=self._waiters.final_seen,
            on_refusal=self._waiters.refusal_seen,
            metrics=metrics,
        )
        self._supervisor = TaskSupervisor(
            self._run,
            name="result-listener",
            on_restart=metrics.result_listener_restarts.inc,
            sleep=sleep,
            clock=clock,
        )
        self._decoder = decoder
        self._feed: ResultFeed | None = None

    async def start(self) -> None:
        """Opens the first feed before returning, so that a facade whose results topic is
        missing fails at start-up rather than retrying in the background."""
        self._feed = await self._open_feed()
        self._supervisor.start()

    async def stop(self) -> None:
        """Safe to call twice."""
        await self._supervisor.stop()
        # Still set if the supervisor was stopped before its first run took the feed over.
        feed, self._feed = self._feed, None
        if feed is not None:
            await feed.close()

    async def is_ready(self) -> bool:
        return self._feed is not None and self._supervisor.running

    async def wait_for_final(
        self, payment_request_id: str, timeout_s: float, *, refusal_event_id: str | None = None
    ) -> bool:
        """Also waits for a refund, given its ``ref_`` id; see
        :meth:`ResultWaiters.wait_for_final`."""
        return await self._waiters.wait_for_final(
            payment_request_id, timeout_s, refusal_event_id=refusal_event_id
        )

    def watch(
        self, payment_request_id: str, *, refusal_event_id: str | None = None
    ) -> AbstractContextManager[Watch]:
        """See :meth:`ResultWaiters.watch`."""
        return self._waiters.watch(payment_request_id, refusal_event_id=refusal_event_id)

    async def _run(self) -> None:
        reopened = self._feed is None
        feed = self._feed if self._feed is not None else await self._open_feed()
        self._feed = feed
        try:
            if reopened:
                await self._waiters.recheck_store()
            while True:
                registry_down = False
                for record in await feed.next_batch():
                    if not registry_down:
                        registry_down = not await self._learn_writer(record)
                    self._events.handle(record)
                if registry_down:
                    await self._waiters.recheck_store()
        finally:
            self._feed = None
            await feed.close()

    async def _learn_writer(self, record: ResultRecord) -> bool:
        """False when the schema registry could not be asked about the record's writer id."""
        try:
            await self._decoder.learn_writer(record.value or b"")
        except SchemaSourceUnavailable as exc:
            log.warning(
                "schema registry unavailable; waiting requests re-check the store: %s",
                type(exc).__name__,
                extra={"partition": record.partition, "offset": record.offset},
            )
            return False
        return True
