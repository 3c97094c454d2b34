"""A started/stopped idempotent aiokafka producer, shared by everything in one process."""

from __future__ import annotations

import asyncio
from types import TracebackType

from aiokafka import AIOKafkaProducer


class KafkaProducer:
    """acks=all with idempotence: a retried send is written once per producer session."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        client_id: str = "paygate",
        request_timeout_ms: int = 30_000,
    ) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._client_id = client_id
        self._request_timeout_ms = request_timeout_ms
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap_servers,
            client_id=self._client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
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
        producer, self._producer = self._producer, None
        if producer is not None:
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
