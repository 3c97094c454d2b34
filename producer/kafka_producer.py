"""A started/stopped idempotent aiokafka producer, shared by everything in one process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Final

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError

log = logging.getLogger("devtools.kafka.producer")

# How long stop() waits for queued records to be acknowledged before it drops them.
DEFAULT_STOP_TIMEOUT_S: Final = 10.0
# How long a record waits for others to share its request. aiokafka sends one request per
# broker at a time, so records that arrive while one is in flight share the next request
# whatever the linger: a linger only makes the first record of a quiet spell wait.
DEFAULT_LINGER_MS: Final = 0


class KafkaProducer:
    """acks=all with idempotence: a retried send is written once per producer session.

    ``connection`` holds aiokafka's keyword arguments naming the cluster and how to reach
    it (``bootstrap_servers``, and for a secured cluster ``security_protocol``,
    ``ssl_context``, ``sasl_*``): the process's wiring makes them, this module only passes
    them on.
    """

    def __init__(
        self,
        connection: Mapping[str, object],
        *,
        client_id: str = "paygate",
        request_timeout_ms: int = 30_000,
        stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
        linger_ms: int = DEFAULT_LINGER_MS,
    ) -> None:
        if linger_ms < 0:
            raise ValueError(f"linger_ms must be 0 or more, got {linger_ms!r}")
        self._connection = dict(connection)
        self._linger_ms = linger_ms
        self._client_id = client_id
        self._request_timeout_ms = request_timeout_ms
        self._stop_timeout_s = stop_timeout_s
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(
            **self._connection,
            client_id=self._client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=self._linger_ms,
            request_timeout_ms=self._request_timeout_ms,
        )
        try:
            await producer.start()
        except BaseException:
            # A failed start leaves the client's connections half-open otherwise.
            await producer.stop()
            raise
        self._producer = producer

    async def stop(self) -> None:
        """Flush, then close; bounded by ``stop_timeout_s`` even when Kafka is down.

        aiokafka's own stop waits until every queued record is acknowledged, which never
        happens while the broker is unreachable. Past the deadline the records still
        queued are failed instead (their senders see ``KafkaTimeoutError``). Nothing
        counts on an unacknowledged record: the facade answered its request 503 or is
        shutting it down, the outbox relay marks a row published only once acknowledged,
        and the consumer commits past a dead letter only once it is written.
        """
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            await asyncio.wait_for(producer.flush(), self._stop_timeout_s)
        except TimeoutError:
            log.warning(
                "records not acknowledged within %g s are dropped at stop", self._stop_timeout_s
            )
            # aiokafka has no public way to give up on queued records; failing their
            # batches is what lets its stop() finish.
            producer._message_accumulator.fail_all(
                KafkaTimeoutError("the producer stopped before Kafka acknowledged the record")
            )
        await producer.stop()

    async def __aenter__(self) -> KafkaProducer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def reachable(self) -> bool:
        """Started, and a broker answers a metadata request now (raises KafkaError when
        none does): the ``kafka`` readiness check."""
        if self._producer is None:
            return False
        await self._producer.client.fetch_all_metadata()
        return True

    @property
    def client(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("KafkaProducer.start() has not been called")
        return self._producer

    async def send_and_wait(
        self,
        topic: str,
        value: bytes,
        *,
        key: str,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        await self.client.send_and_wait(topic, value, key=key.encode(), headers=headers)

    async def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: str,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[object]:
        """Queue the record and return the future of its acknowledgement.

        Cancelling this call before it returns queues nothing. Once it has returned, the
        record is in the producer's buffer and will be sent whatever becomes of the
        future: aiokafka retries it until the broker acknowledges it (or the producer
        stops), and never expires a batch whose partition leader is known, however long
        that leader stays unreachable. A caller that stops waiting must be able to live
        with the record arriving later.
        """
        delivery: asyncio.Future[object] = await self.client.send(
            topic, value, key=key.encode(), headers=headers
        )
        return delivery
