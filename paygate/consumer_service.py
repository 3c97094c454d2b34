"""Wires and runs the consumer process: runner, handler, store, providers, relay, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaConsumer

from consumer.dead_letters import DeadLetterRouter
from consumer.dispatch import CommandDispatcher
from consumer.key_expiry import KeyExpiry
from consumer.periodic import run_periodically
from consumer.runner import CommandRunner
from paygate.database import open_database
from paygate.handlers import handlers_of
from paygate.kafka_login import check_kafka_login
from paygate.kafka_security import kafka_client_options
from paygate.providers import build_router
from paygate.schema_source import payment_messages
from paygate.settings import Settings
from paygate.startup import start_with_retry
from persistence.outbox_lease import OutboxLease
from producer.kafka_producer import KafkaProducer
from producer.outbox_relay import OutboxRelay
from providers.registry import Providers
from providers.routing import Router
from telemetry.metrics import Metrics

log = logging.getLogger("paygate.consumer")


@dataclass
class ConsumerService:
    """Everything the consumer process runs, started and stopped as one.

    ``router`` names, per payment, the providers of ``providers`` to try in order; unset, it
    is built from the settings' routes (see :func:`paygate.providers.build_router`).
    """

    settings: Settings
    providers: Providers
    metrics: Metrics
    router: Router | None = None

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.settings
        router = self.router or build_router(settings, self.providers)
        kafka = kafka_client_options(settings)
        # A refused login or certificate ends the process here, before anything starts.
        await check_kafka_login(kafka)
        messages = await payment_messages(settings)
        producer = KafkaProducer(kafka, client_id="paygate-consumer")
        consumer = AIOKafkaConsumer(
            **kafka,
            group_id=settings.consumer_group,
            client_id="paygate-consumer",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_interval_ms=settings.max_poll_interval_ms,
            # Heartbeats run in the background; a small session timeout makes a killed
            # consumer's partitions move to the survivors quickly.
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
        )
        # Everything started is stopped in reverse order, whatever stops the consumer.
        async with contextlib.AsyncExitStack() as started:
            db = await open_database(settings)
            started.push_async_callback(db.close)
            # Every consumer process runs a relay; the lease lets one of them publish at a
            # time.
            lease = OutboxLease(db.writes, duration=timedelta(seconds=settings.outbox_lease_s))
            relay = OutboxRelay(
                db.outbox,
                producer,
                self.metrics,
                lease,
                renew_interval_s=settings.outbox_lease_renew_s,
            )
            handlers = handlers_of(
                settings,
                db=db,
                providers=self.providers,
                router=router,
                messages=messages,
                metrics=self.metrics,
            )
            runner = CommandRunner(
                consumer=consumer,
                topic=settings.commands_topic,
                messages=messages,
                handler=CommandDispatcher(handlers.payments, handlers.refunds, handlers.captures),
                dead_letters=DeadLetterRouter(producer, settings.dlq_topic, self.metrics),
                metrics=self.metrics,
                after_work=relay.notify,
                max_in_flight=settings.max_in_flight,
                drain_timeout_s=settings.drain_timeout_s,
                max_handling_attempts=settings.max_handling_attempts,
                learn_writer=messages.learn_writer,
            )
            key_expiry = KeyExpiry(
                db.payments, timedelta(days=settings.idempotency_key_retention_days)
            )
            outbox_retention = timedelta(days=settings.outbox_retention_days)

            async def housekeeping() -> int:
                expired = await key_expiry.run_once()
                pruned = await db.outbox.prune(datetime.now(UTC) - outbox_retention)
                return expired + pruned

            await self.providers.start_all()
            started.push_async_callback(self.providers.stop_all)
            await start_with_retry(producer.start, "Kafka (producer)")
            started.push_async_callback(producer.stop)
            await start_with_retry(consumer.start, "Kafka (consumer)")
            started.push_async_callback(consumer.stop)

            started.push_async_callback(relay.stop)  # drains, then releases the lease
            interval = settings.reconcile_interval_s
            for work, name in (
                (relay.run(), "outbox-relay"),
                (handlers.payment_reconciler.run(stop, interval), "reconciler"),
                (handlers.refund_reconciler.run(stop, interval), "refund-reconciler"),
                (handlers.capture_reconciler.run(stop, interval), "capture-reconciler"),
                (
                    run_periodically(
                        stop,
                        settings.key_expiry_interval_s,
                        housekeeping,
                        "idempotency keys expired and outbox rows pruned",
                    ),
                    "housekeeping",
                ),
            ):
                started.push_async_callback(_cancel, asyncio.create_task(work, name=name))

            runner_task = asyncio.create_task(runner.run(), name="command-runner")
            stop_task = asyncio.create_task(stop.wait(), name="stop-signal")
            started.push_async_callback(_cancel, stop_task)
            log.info("consumer started", extra={"topic": settings.commands_topic})
            await asyncio.wait({runner_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            runner.stop()
            await runner_task  # finishes its batch and commits; re-raises a crash
        log.info("consumer stopped")


async def _cancel(task: asyncio.Task[None] | asyncio.Task[bool]) -> None:
    """Cancel a background task and wait for it to end."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
