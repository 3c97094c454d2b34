"""Wires and runs the consumer process: runner, handler, store, provider, relay, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer

from consumer.dead_letters import DeadLetterRouter
from consumer.payment_handler import PaymentCommandHandler
from consumer.results import ResultEvents
from consumer.runner import CommandRunner
from paygate.metrics import Metrics
from paygate.settings import Settings
from persistence.engine import create_engine, create_schema
from persistence.payment_store import PaymentStore
from producer.kafka_producer import KafkaProducer
from producer.outbox_relay import OutboxRelay
from providers.port import PaymentProvider
from schemas.codec import AvroCodec
from schemas.payments import PaymentMessages
from schemas.registry import FileSchemaRegistry

log = logging.getLogger("paygate.consumer")


@dataclass
class ConsumerService:
    """Everything the consumer process runs, started and stopped as one."""

    settings: Settings
    provider: PaymentProvider
    metrics: Metrics

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.settings
        engine = create_engine(settings.database_url)
        await create_schema(engine)
        store = PaymentStore(engine)
        messages = PaymentMessages(AvroCodec(FileSchemaRegistry.bundled()))
        producer = KafkaProducer(settings.require_kafka(), client_id="paygate-consumer")
        consumer = AIOKafkaConsumer(
            settings.commands_topic,
            bootstrap_servers=settings.require_kafka(),
            group_id=settings.consumer_group,
            client_id="paygate-consumer",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        relay = OutboxRelay(store, producer, self.metrics)
        handler = PaymentCommandHandler(
            store=store,
            provider=self.provider,
            events=ResultEvents(messages, settings.results_topic),
            account_key=settings.account_key,
            metrics=self.metrics,
        )
        runner = CommandRunner(
            consumer=consumer,
            messages=messages,
            handler=handler,
            dead_letters=DeadLetterRouter(producer, settings.dlq_topic, self.metrics),
            after_batch=relay.notify,
        )
        relay_task: asyncio.Task[None] | None = None
        try:
            await self.provider.start()
            await producer.start()
            await consumer.start()
            relay_task = asyncio.create_task(relay.run(), name="outbox-relay")
            runner_task = asyncio.create_task(runner.run(), name="command-runner")
            stop_task = asyncio.create_task(stop.wait(), name="stop-signal")
            log.info("consumer started", extra={"topic": settings.commands_topic})
            await asyncio.wait({runner_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            runner.stop()
            await runner_task  # finishes its batch and commits; re-raises a crash
            stop_task.cancel()
        finally:
            if relay_task is not None:
                relay_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await relay_task
                with contextlib.suppress(Exception):
                    await relay.drain()
            await consumer.stop()
            await producer.stop()
            await self.provider.stop()
            await engine.dispose()
            log.info("consumer stopped")
