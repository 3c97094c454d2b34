"""Publishes commands from the REST facade to the command topic, each within a deadline.

A REST client waits on this, and Kafka would let it wait for ever: aiokafka keeps a record
whose partition leader is known but unreachable in its buffer, retrying, without a
deadline. So every hand-over is bounded by ``timeout_s``; past it, or on a Kafka error,
the request fails with ``service_unavailable`` (503 with ``Retry-After``), and Kafka's
state is logged once per change by an :class:`~telemetry.outage_log.OutageLog`, not per
request.

A command given up on may still reach Kafka later: once queued, a record cannot be taken
back (:meth:`producer.kafka_producer.KafkaProducer.send`). That is safe, and the 503
says "may or may not have been accepted", because every command is keyed
deterministically and the consumer dedupes by that key:

- a payment's id derives from (client, order, idempotency key, key generation), a
  refund's from (payment, idempotency key), a capture from its payment. The client's
  retry with the same ``Idempotency-Key`` therefore names the same payment as the copy
  that arrives late: whichever the consumer sees first is processed, the other replays;
  a retry that comes after the late copy was processed is answered from the store.
- nothing is ever charged that the client did not ask for with that key; the one thing
  a client that never retries misses is the outcome, which the retry (or a ``GET``)
  tells it.

The late outcome is not left unobserved: a late acknowledgement is logged (and shows
Kafka is back), a late failure is logged too, so no future's exception goes unretrieved.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka.errors import KafkaError

from domain.cancels import CancelPayment
from domain.captures import CapturePayment
from domain.errors import ErrorCode, PaygateError
from domain.payments import CreatePayment
from domain.refunds import RefundPayment
from producer.kafka_producer import KafkaProducer
from schemas.payments import PaymentMessages
from telemetry.outage_log import OutageLog, error_types

log = logging.getLogger("paygate.http.publish")

DEFAULT_TIMEOUT_S = 5.0


class KafkaCommandPublisher:
    """Keyed by order id, so every command of one order lands on one partition, in order."""

    def __init__(
        self,
        producer: KafkaProducer,
        messages: PaymentMessages,
        topic: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        outages: OutageLog | None = None,
    ) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        self._producer = producer
        self._messages = messages
        self._topic = topic
        self._timeout_s = timeout_s
        self._outages = outages if outages is not None else OutageLog("kafka", log)

    async def publish_create_payment(self, command: CreatePayment) -> None:
        await self._send(self._messages.encode_command(command), command.order_id, "payment")

    async def publish_refund(self, command: RefundPayment) -> None:
        await self._send(self._messages.encode_refund(command), command.order_id, "refund")

    async def publish_capture(self, command: CapturePayment) -> None:
        await self._send(self._messages.encode_capture(command), command.order_id, "capture")

    async def publish_cancel(self, command: CancelPayment) -> None:
        await self._send(self._messages.encode_cancel(command), command.order_id, "cancel")

    async def _send(self, value: bytes, order_id: str, what: str) -> None:
        delivery: asyncio.Future[object] | None = None
        try:
            async with asyncio.timeout(self._timeout_s):
                delivery = await self._producer.send(self._topic, value, key=order_id)
                # Shielded, so the deadline leaves the acknowledgement's future running
                # and its late outcome can still be observed.
                await asyncio.shield(delivery)
        except (KafkaError, TimeoutError) as exc:
            self._outages.failed(exc)
            if delivery is not None and not delivery.done():
                delivery.add_done_callback(
                    lambda done: self._late_outcome(done, order_id=order_id, what=what)
                )
            raise PaygateError(
                ErrorCode.SERVICE_UNAVAILABLE,
                f"the {what} could not be handed to the processing queue in time; it may "
                "still be processed: retry with the same Idempotency-Key",
            ) from exc
        self._outages.succeeded()

    def _late_outcome(self, delivery: asyncio.Future[object], *, order_id: str, what: str) -> None:
        fields = {"order_id": order_id, "command": what}
        if delivery.cancelled():
            log.warning("a %s answered 503 was never handed to Kafka", what, extra=fields)
            return
        exc = delivery.exception()
        if exc is not None:
            log.warning(
                "a %s answered 503 was never handed to Kafka",
                what,
                extra={**fields, "error_type": error_types(exc)},
            )
            return
        self._outages.succeeded()
        log.info(
            "a %s answered 503 reached Kafka later; a retry with the same Idempotency-Key "
            "is the same %s",
            what,
            what,
            extra=fields,
        )
