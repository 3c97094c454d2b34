"""Publishes commands from the REST facade to the command topic."""

from __future__ import annotations

from aiokafka.errors import KafkaError

from domain.captures import CapturePayment
from domain.commands import CreatePayment
from domain.errors import ErrorCode, PaygateError
from domain.refunds import RefundPayment
from producer.kafka_producer import KafkaProducer
from schemas.payments import PaymentMessages


class KafkaCommandPublisher:
    """Keyed by order id, so every command of one order lands on one partition, in order."""

    def __init__(self, producer: KafkaProducer, messages: PaymentMessages, topic: str) -> None:
        self._producer = producer
        self._messages = messages
        self._topic = topic

    async def publish_create_payment(self, command: CreatePayment) -> None:
        await self._send(self._messages.encode_command(command), command.order_id, "payment")

    async def publish_refund(self, command: RefundPayment) -> None:
        await self._send(self._messages.encode_refund(command), command.order_id, "refund")

    async def publish_capture(self, command: CapturePayment) -> None:
        await self._send(self._messages.encode_capture(command), command.order_id, "capture")

    async def _send(self, value: bytes, order_id: str, what: str) -> None:
        try:
            await self._producer.send_and_wait(self._topic, value, key=order_id)
        except KafkaError as exc:
            raise PaygateError(
                ErrorCode.SERVICE_UNAVAILABLE,
                f"the {what} could not be handed to the processing queue; retry with the "
                "same Idempotency-Key",
            ) from exc
