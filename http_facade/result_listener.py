"""Lets a facade request wait for its payment's result, on any facade instance.

Every instance reads every partition of the results topic (no consumer group: nothing is
shared or committed), so whichever instance holds the waiting request sees the event.
The store stays the source of truth: the listener only says "a final result exists",
and the request then reads the payment from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from domain.events import PaymentResult
from domain.refunds import is_refund_id
from http_facade.ports import PaymentQueries, RefundQueries
from schemas.codec import CodecError
from schemas.payments import PaymentMessages

log = logging.getLogger("paygate.http.results")


class KafkaResultListener:
    def __init__(
        self,
        *,
        bootstrap_servers: str,
        topic: str,
        messages: PaymentMessages,
        queries: PaymentQueries,
        refunds: RefundQueries,
    ) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._topic = topic
        self._messages = messages
        self._queries = queries
        self._refunds = refunds
        self._waiters: defaultdict[str, set[asyncio.Future[None]]] = defaultdict(set)
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        partitions = await _partition_ids(self._bootstrap_servers, self._topic)
        if not partitions:
            raise RuntimeError(f"topic {self._topic} does not exist; run `paygate topics create`")
        await consumer.start()
        assigned = [TopicPartition(self._topic, p) for p in partitions]
        consumer.assign(assigned)
        # Only results from now on matter: older ones are already in the store.
        await consumer.seek_to_end(*assigned)
        for tp in assigned:
            await consumer.position(tp)
        self._consumer = consumer
        self._task = asyncio.create_task(self._listen(consumer), name="result-listener")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def wait_for_final(self, payment_request_id: str, timeout_s: float) -> bool:
        """Also waits for a refund, given its ``ref_`` id."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._waiters[payment_request_id].add(future)
        try:
            # Registered first, then checked: a result that lands between the two is seen
            # by one or the other.
            if await self._is_final_in_store(payment_request_id):
                return True
            await asyncio.wait_for(future, timeout_s)
            return True
        except TimeoutError:
            return False
        finally:
            waiters = self._waiters.get(payment_request_id)
            if waiters is not None:
                waiters.discard(future)
                if not waiters:
                    del self._waiters[payment_request_id]

    async def _listen(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=500)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading results failed; retrying")
                await asyncio.sleep(1.0)
                continue
            for records in batches.values():
                for record in records:
                    self._on_record(record.value or b"")

    async def _is_final_in_store(self, waited_id: str) -> bool:
        if is_refund_id(waited_id):
            refund = await self._refunds.get(waited_id)
            return refund is not None and refund.status.is_final
        payment = await self._queries.get_payment(waited_id)
        return payment is not None and payment.status.is_final

    def _on_record(self, value: bytes) -> None:
        try:
            event = self._messages.decode_any_result(value)
        except (CodecError, ValueError, KeyError) as exc:
            log.warning("undecodable result event ignored: %s", exc)
            return
        if not event.status.is_final:
            return
        waited_id = (
            event.payment_request_id if isinstance(event, PaymentResult) else event.refund_id
        )
        for future in self._waiters.get(waited_id, ()):
            if not future.done():
                future.set_result(None)


async def _partition_ids(bootstrap_servers: str, topic: str) -> list[int]:
    # A consumer without a subscription has no metadata for the topic; the admin client
    # asks for it explicitly.
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(
        int(partition["partition"])
        for entry in described
        if entry["topic"] == topic and entry["error_code"] == 0
        for partition in entry["partitions"]
    )
