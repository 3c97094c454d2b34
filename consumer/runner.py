"""The Kafka side of the consumer: fetch, decode, dispatch, commit.

Offsets are committed only after every message below them has been durably handled: its
outcome committed to the store, or the message itself written to the dead-letter topic.
A crash anywhere replays from the last commit; the handler makes replays harmless.

Messages of one partition are handled in order. When handling fails for a reason that is
not the message's fault (database or broker down), the partition is rewound to that
message and retried after a back-off, without committing past it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from consumer.dead_letters import DeadLetterRouter
from consumer.payment_handler import PaymentCommandHandler
from domain.errors import ErrorCode, PaygateError
from schemas.codec import CodecError
from schemas.payments import PaymentMessages

log = logging.getLogger("paygate.consumer")


class CommandRunner:
    def __init__(
        self,
        *,
        consumer: AIOKafkaConsumer,
        messages: PaymentMessages,
        handler: PaymentCommandHandler,
        dead_letters: DeadLetterRouter,
        after_batch: Callable[[], None] = lambda: None,
        batch_size: int = 500,
        retry_backoff_s: float = 1.0,
    ) -> None:
        self._consumer = consumer
        self._messages = messages
        self._handler = handler
        self._dead_letters = dead_letters
        self._after_batch = after_batch
        self._batch_size = batch_size
        self._retry_backoff_s = retry_backoff_s
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Finish the batch in hand, commit it and return from :meth:`run`."""
        self._stopping.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            batches = await self._consumer.getmany(timeout_ms=200, max_records=self._batch_size)
            if not batches:
                continue
            done: dict[TopicPartition, int] = {}
            failed = False
            for tp, records in batches.items():
                next_offset, ok = await self._handle_partition(tp, records)
                if next_offset is not None:
                    done[tp] = next_offset
                failed = failed or not ok
            if done:
                await self._consumer.commit(done)
            self._after_batch()
            if failed:
                await self._sleep_unless_stopping(self._retry_backoff_s)

    async def _handle_partition(
        self, tp: TopicPartition, records: list[ConsumerRecord]
    ) -> tuple[int | None, bool]:
        """Handle records in order; return (offset to commit, whether all succeeded)."""
        next_offset: int | None = None
        for record in records:
            try:
                await self._handle_record(record)
            except Exception:
                log.exception(
                    "handling failed; will retry from this offset",
                    extra={"topic": tp.topic, "partition": tp.partition, "offset": record.offset},
                )
                self._consumer.seek(tp, record.offset)
                return next_offset, False
            next_offset = record.offset + 1
        return next_offset, True

    async def _handle_record(self, record: ConsumerRecord) -> None:
        try:
            command = self._messages.decode_command(record.value or b"")
        except CodecError as exc:
            await self._dead_letter(record, exc, exc.reason)
            return
        except PaygateError as exc:
            await self._dead_letter(record, exc, f"invalid_value:{exc.param or 'unknown'}")
            return
        except (KeyError, TypeError, ValueError) as exc:
            # Defensive: the schema should make these impossible, but a poison message
            # must never stop the partition.
            error = PaygateError(
                ErrorCode.INVALID_REQUEST, f"invalid command: {type(exc).__name__}"
            )
            await self._dead_letter(record, error, "invalid_value")
            return
        await self._handler.handle(command)

    async def _dead_letter(self, record: ConsumerRecord, error: PaygateError, reason: str) -> None:
        await self._dead_letters.route(
            value=record.value,
            key=record.key,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            error=error,
            reason=reason,
        )

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
