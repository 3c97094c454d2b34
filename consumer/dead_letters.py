"""Routes messages that can never be processed to the dead-letter topic.

The original bytes are kept as they were, but for account numbers: ``redact`` replaces
them (consumer.dead_letter_redaction) before anything is written, and a key that holds
one (domain.account_numbers) is written masked. Headers say why and
where the message came from, so an operator can fix the cause and re-publish it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Final

from domain.account_numbers import scrub_bytes
from domain.errors import PaygateError
from producer.kafka_producer import KafkaProducer
from telemetry.metrics import Metrics

log = logging.getLogger("paygate.dlq")

HEADER_ERROR_CODE: Final = "paygate.error.code"
HEADER_REASON: Final = "paygate.error.reason"
HEADER_MESSAGE: Final = "paygate.error.message"
HEADER_TOPIC: Final = "paygate.original.topic"
HEADER_PARTITION: Final = "paygate.original.partition"
HEADER_OFFSET: Final = "paygate.original.offset"
HEADER_FIRST_SEEN: Final = "paygate.first.seen"
REPUBLISHED_PREFIX: Final = "paygate.republished."


class DeadLetterRouter:
    def __init__(
        self,
        producer: KafkaProducer,
        topic: str,
        metrics: Metrics,
        *,
        redact: Callable[[bytes], Awaitable[bytes]] | None = None,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._metrics = metrics
        self._redact = redact

    async def route(
        self,
        *,
        value: bytes | None,
        key: bytes | None,
        topic: str,
        partition: int,
        offset: int,
        error: PaygateError,
        reason: str,
        incoming_headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        carried = dict(incoming_headers)
        # A message re-published from the dead-letter topic that fails again keeps the
        # time it was first seen failing, and the trail of where it was re-published from.
        first_seen = carried.get(HEADER_FIRST_SEEN) or datetime.now(UTC).isoformat().encode()
        headers = [
            (HEADER_ERROR_CODE, error.code.value.encode()),
            (HEADER_REASON, _utf8(reason)),
            (HEADER_MESSAGE, _utf8(error.message)),
            (HEADER_TOPIC, topic.encode()),
            (HEADER_PARTITION, str(partition).encode()),
            (HEADER_OFFSET, str(offset).encode()),
            (HEADER_FIRST_SEEN, first_seen),
            *((k, v) for k, v in incoming_headers if k.startswith(REPUBLISHED_PREFIX)),
        ]
        # The key is no part of the value the redaction sees; it is written as it came
        # (keys are order ids, kept for a re-publish) unless it holds an account number.
        key = None if key is None else scrub_bytes(key)
        body = value or b""
        if self._redact is not None and body:
            body = await self._redact(body)
        await self._producer.client.send_and_wait(self._topic, body, key=key, headers=headers)
        self._metrics.dead_lettered.labels(error.code.value, reason_kind(reason)).inc()
        self._metrics.commands_consumed.labels("unknown", "dead_lettered").inc()
        log.warning(
            "message dead-lettered",
            extra={
                "code": error.code.value,
                "reason": reason,
                "error_message": error.message,
                "topic": topic,
                "partition": partition,
                "offset": offset,
            },
        )


def reason_kind(reason: str) -> str:
    """The reason without its detail (``invalid_value:orderId`` -> ``invalid_value``).

    A metric label must come from a small fixed set; the detail can name a metadata key.
    """
    return reason.partition(":")[0]


def _utf8(text: str) -> bytes:
    # A text that cannot be encoded (a lone surrogate) must not make the dead letter
    # unwritable, and so the message stuck: it is written escaped instead.
    return text.encode("utf-8", "backslashreplace")
