"""Wires and runs the consumer process: runner, handler, store, providers, relay, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaConsumer

from consumer.capture_handler import CaptureCommandHandler
from consumer.capture_reconciler import CaptureReconciler
from consumer.dead_letters import DeadLetterRouter
from consumer.dispatch import CommandDispatcher
from consumer.key_expiry import KeyExpiry
from consumer.payment_handler import PaymentCommandHandler
from consumer.periodic import run_periodically
from consumer.reconciler import Reconciler
from consumer.refund_handler import RefundCommandHandler
from consumer.refund_reconciler import RefundReconciler
from consumer.refund_results import RefundEvents
from consumer.results import ResultEvents
from consumer.runner import CommandRunner
from paygate.metrics import Metrics
from paygate.providers import build_router
from paygate.settings import Settings
from paygate.startup import start_with_retry
from persistence.capture_store import CaptureStore
from persistence.engine import create_engine, create_schema
from persistence.outbox_lease import OutboxLease
from persistence.payment_store import PaymentStore
from persistence.refund_store import RefundStore
from producer.kafka_producer import KafkaProducer
from producer.outbox_relay import OutboxRelay
from providers.registry import Providers
from providers.routing import Router
from schemas.payments import PaymentMessages

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
        engine = create_engine(settings.database_url)
        await create_schema(engine)
        store = PaymentStore(engine)
        messages = PaymentMessages.bundled()
        producer = KafkaProducer(settings.require_kafka(), client_id="paygate-consumer")
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.require_kafka(),
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
        # Every consumer process runs a relay; the lease lets one of them publish at a time.
        lease = OutboxLease(store.writes, duration=timedelta(seconds=settings.outbox_lease_s))
        relay = OutboxRelay(
            store, producer, self.metrics, lease, renew_interval_s=settings.outbox_lease_renew_s
        )
        events = ResultEvents(messages, settings.results_topic)
        retry_policy = settings.retry_policy()
        resend_window = timedelta(seconds=settings.abandon_after_s / 2)
        min_age = timedelta(seconds=settings.reconcile_min_age_s)
        abandon_after = timedelta(seconds=settings.abandon_after_s)
        handler = PaymentCommandHandler(
            store=store,
            providers=self.providers,
            router=router,
            events=events,
            account_key=settings.account_key,
            metrics=self.metrics,
            resend_window=resend_window,
            retry_policy=retry_policy,
        )
        refund_store = RefundStore(engine, store.writes)
        refund_events = RefundEvents(messages, settings.results_topic)
        refund_handler = RefundCommandHandler(
            store=refund_store,
            providers=self.providers,
            events=refund_events,
            metrics=self.metrics,
            retry_policy=retry_policy,
            resend_window=resend_window,
        )
        capture_store = CaptureStore(engine, store.writes)
        capture_handler = CaptureCommandHandler(
            store=capture_store,
            providers=self.providers,
            events=events,
            metrics=self.metrics,
            retry_policy=retry_policy,
        )
        capture_reconciler = CaptureReconciler(
            store=capture_store, handler=capture_handler, min_age=min_age
        )
        reconciler = Reconciler(
            store=store,
            providers=self.providers,
            events=events,
            metrics=self.metrics,
            min_age=min_age,
            abandon_after=abandon_after,
        )
        refund_reconciler = RefundReconciler(
            store=refund_store,
            providers=self.providers,
            events=refund_events,
            metrics=self.metrics,
            min_age=min_age,
            abandon_after=abandon_after,
        )
        runner = CommandRunner(
            consumer=consumer,
            topic=settings.commands_topic,
            messages=messages,
            handler=CommandDispatcher(handler, refund_handler, capture_handler),
            dead_letters=DeadLetterRouter(producer, settings.dlq_topic, self.metrics),
            metrics=self.metrics,
            after_work=relay.notify,
            max_in_flight=settings.max_in_flight,
            drain_timeout_s=settings.drain_timeout_s,
        )
        relay_task: asyncio.Task[None] | None = None
        reconciler_task: asyncio.Task[None] | None = None
        refund_reconciler_task: asyncio.Task[None] | None = None
        capture_reconciler_task: asyncio.Task[None] | None = None
        expiry_task: asyncio.Task[None] | None = None
        key_expiry = KeyExpiry(store, timedelta(days=settings.idempotency_key_retention_days))
        outbox_retention = timedelta(days=settings.outbox_retention_days)

        async def housekeeping() -> int:
            expired = await key_expiry.run_once()
            pruned = await store.prune_outbox(datetime.now(UTC) - outbox_retention)
            return expired + pruned

        try:
            await self.providers.start_all()
            await start_with_retry(producer.start, "Kafka (producer)")
            await start_with_retry(consumer.start, "Kafka (consumer)")
            relay_task = asyncio.create_task(relay.run(), name="outbox-relay")
            reconciler_task = asyncio.create_task(
                reconciler.run(stop, settings.reconcile_interval_s), name="reconciler"
            )
            refund_reconciler_task = asyncio.create_task(
                refund_reconciler.run(stop, settings.reconcile_interval_s),
                name="refund-reconciler",
            )
            capture_reconciler_task = asyncio.create_task(
                capture_reconciler.run(stop, settings.reconcile_interval_s),
                name="capture-reconciler",
            )
            expiry_task = asyncio.create_task(
                run_periodically(
                    stop,
                    settings.key_expiry_interval_s,
                    housekeeping,
                    "idempotency keys expired and outbox rows pruned",
                ),
                name="housekeeping",
            )
            runner_task = asyncio.create_task(runner.run(), name="command-runner")
            stop_task = asyncio.create_task(stop.wait(), name="stop-signal")
            log.info("consumer started", extra={"topic": settings.commands_topic})
            await asyncio.wait({runner_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            runner.stop()
            await runner_task  # finishes its batch and commits; re-raises a crash
            stop_task.cancel()
        finally:
            tasks = (reconciler_task, refund_reconciler_task, capture_reconciler_task, expiry_task)
            for task in tasks:
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if relay_task is not None:
                relay_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await relay_task
                with contextlib.suppress(Exception):
                    await relay.stop()  # drains, then releases the lease
            await consumer.stop()
            await producer.stop()
            await self.providers.stop_all()
            await engine.dispose()
            log.info("consumer stopped")
