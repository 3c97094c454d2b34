"""Wires and runs the consumer process: runner, handler, store, providers, relay, metrics,
and the readiness checks its ops listener answers ``/readyz`` with."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaConsumer

from consumer.account_intake import AccountIntake, AdmittedPayments
from consumer.assignment import AssignmentWatch
from consumer.dead_letter_redaction import DeadLetterRedaction
from consumer.dead_letters import DeadLetterRouter
from consumer.dispatch import CommandDispatcher
from consumer.failures import outage_of
from consumer.key_expiry import KeyExpiry
from consumer.lag import ConsumerLag
from consumer.ops_gauges import OpsGauges
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
from paygate.vault_wiring import account_key_pair, open_vault
from paygate.webhook_dispatch import webhook_dispatcher, webhook_sender
from persistence.database import Database
from persistence.outbox_lease import OutboxLease
from producer.kafka_producer import KafkaProducer
from producer.outbox_relay import OutboxRelay
from providers.registry import Providers
from providers.routing import Router
from telemetry.metrics import Metrics
from telemetry.readiness import Readiness
from vault.recent_numbers import RecentNumbers

log = logging.getLogger("paygate.consumer")

# How long a stopping relay may take to end its pass: a few producer round trips at most,
# unless the broker does not answer.
_RELAY_FINISH_S = 10.0


@dataclass
class _Started:
    """The parts the readiness checks look at, set as :meth:`ConsumerService.run` starts
    them and cleared as it stops them: a check of a part not started fails."""

    db: Database | None = None
    producer: KafkaProducer | None = None
    consumer_started: bool = False
    assignment: AssignmentWatch | None = None
    relay: OutboxRelay | None = None

    def clear(self) -> None:
        self.db = self.producer = self.assignment = self.relay = None
        self.consumer_started = False


@dataclass
class ConsumerService:
    """Everything the consumer process runs, started and stopped as one.

    ``router`` names, per payment, the providers of ``providers`` to try in order; unset, it
    is built from the settings' routes (see :func:`paygate.providers.build_router`).
    ``readiness`` receives the consumer's checks at construction (``database``, ``kafka``,
    ``consumer_assignment``, ``outbox_relay``), each failing until its part has started:
    serve it on the ops listener (paygate.ops_server).
    """

    settings: Settings
    providers: Providers
    metrics: Metrics
    router: Router | None = None
    readiness: Readiness = field(default_factory=Readiness)
    _started: _Started = field(default_factory=_Started, init=False, repr=False)

    def __post_init__(self) -> None:
        started = self._started

        async def database() -> bool:
            if started.db is None:
                return False
            await started.db.backlogs.ping()
            return True

        async def kafka() -> bool:
            return (
                started.consumer_started
                and started.producer is not None
                and await started.producer.reachable()
            )

        async def consumer_assignment() -> bool:
            return started.assignment is not None and await started.assignment.is_ready()

        async def outbox_relay() -> bool:
            return started.relay is not None and await started.relay.is_ready()

        self.readiness.add("database", database)
        self.readiness.add("kafka", kafka)
        self.readiness.add("consumer_assignment", consumer_assignment)
        self.readiness.add("outbox_relay", outbox_relay)

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.settings
        router = self.router or build_router(settings, self.providers)
        kafka = kafka_client_options(settings)
        # A refused login or certificate ends the process here, before anything starts.
        await check_kafka_login(kafka)
        messages = await payment_messages(settings)
        producer = KafkaProducer(
            kafka, client_id="paygate-consumer", linger_ms=settings.kafka_linger_ms
        )
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
            db = await open_database(settings, self.metrics)
            started.push_async_callback(db.close)
            self._started.db = db
            # Runs at exit, just before the database closes: whatever start-up reached,
            # nothing is left for the checks to see.
            started.callback(self._started.clear)
            # Every consumer process runs a relay; the lease lets one of them publish at a
            # time.
            # The holder renews at least every renew interval (a third of the lease at most),
            # not before every batch: one write transaction less per batch.
            lease = OutboxLease(
                db.writes,
                duration=timedelta(seconds=settings.outbox_lease_s),
                trust_for=timedelta(seconds=settings.outbox_lease_renew_s),
            )
            relay = OutboxRelay(
                db.outbox,
                producer,
                self.metrics,
                lease,
                renew_interval_s=settings.outbox_lease_renew_s,
                stall_after_s=settings.outbox_stall_s,
                unreachable=outage_of,
            )
            # Two numbers per command in flight between its intake and its provider call;
            # twice that for the ones a refusal or a redelivery never takes (dropped after
            # vault.recent_numbers.DEFAULT_HOLD_S anyway).
            recent = RecentNumbers(capacity=4 * settings.max_in_flight)
            started.callback(recent.clear)
            opened = await open_vault(settings, db.engine, db.writes, recent=recent)
            started.push_async_callback(opened.close)
            vault = opened.vault
            webhooks = db.webhooks.with_secrets(vault)
            # Secrets left in clear by revision 0017 (or an older release) are sealed now.
            await webhooks.secrets.seal_clear()
            handlers = handlers_of(
                settings,
                db=db,
                # Started and stopped below through self.providers: the same providers.
                providers=self.providers.gated(settings.max_provider_calls),
                router=router,
                messages=messages,
                metrics=self.metrics,
                vault=vault,
            )
            intake = AccountIntake(
                vault,
                account_key_pair(settings),
                accept_clear=settings.clear_account_numbers_accepted,
                retention=timedelta(days=settings.vault_token_retention_days),
            )
            assignment = AssignmentWatch(settings.assignment_grace_s)
            runner = CommandRunner(
                consumer=consumer,
                topic=settings.commands_topic,
                messages=messages,
                handler=CommandDispatcher(
                    AdmittedPayments(intake, handlers.payments),
                    handlers.refunds,
                    handlers.captures,
                    handlers.cancels,
                ),
                dead_letters=DeadLetterRouter(
                    producer,
                    settings.dlq_topic,
                    self.metrics,
                    redact=DeadLetterRedaction(
                        messages,
                        vault,
                        retention=timedelta(days=settings.vault_token_retention_days),
                    ),
                ),
                metrics=self.metrics,
                after_work=relay.notify,
                on_assignment=assignment.changed,
                max_in_flight=settings.max_in_flight,
                drain_timeout_s=settings.drain_timeout_s,
                max_handling_attempts=settings.max_handling_attempts,
                learn_writer=messages.learn_writer,
            )
            key_expiry = KeyExpiry(
                db.payments, timedelta(days=settings.idempotency_key_retention_days)
            )
            outbox_retention = timedelta(days=settings.outbox_retention_days)
            webhook_retention = timedelta(days=settings.webhooks_retention_days)

            async def housekeeping() -> int:
                expired = await key_expiry.run_once()
                pruned = await db.outbox.prune(datetime.now(UTC) - outbox_retention)
                deliveries = await db.webhooks.prune(datetime.now(UTC) - webhook_retention)
                shredded = await vault.delete_expired()
                # Endpoints a facade of the previous release registered during an upgrade.
                sealed = await webhooks.secrets.seal_clear()
                return expired + pruned + deliveries + shredded + sealed

            await self.providers.start_all()
            started.push_async_callback(self.providers.stop_all)
            await start_with_retry(producer.start, "Kafka (producer)")
            started.push_async_callback(producer.stop)
            self._started.producer = producer
            await start_with_retry(consumer.start, "Kafka (consumer)")
            started.push_async_callback(consumer.stop)
            self._started.consumer_started = True
            gauges = OpsGauges(
                backlogs=db.backlogs, lag=ConsumerLag(consumer, self.metrics), metrics=self.metrics
            )
            self.metrics.reconcile_window.set(
                settings.reconcile_min_age_s + 2 * settings.reconcile_interval_s
            )
            for provider in self.providers:
                # A counter's series exists from its first increment; one born at 1 shows no
                # increase() to the alert on stray charges, so it is born at 0 here.
                for result in ("found", "reversed", "reversal_failed"):
                    self.metrics.stray_charges.labels(provider, result)

            started.push_async_callback(relay.stop)  # drains, then releases the lease
            if settings.webhooks_dispatch:
                # Deliveries are queued with the results (persistence.webhook_fanout); the
                # dispatcher sends them beside the pipeline, never in its way.
                sender = webhook_sender(settings)
                await sender.start()
                started.push_async_callback(sender.stop)
                dispatcher = webhook_dispatcher(settings, webhooks, sender, self.metrics)
                started.push_async_callback(
                    _cancel, asyncio.create_task(dispatcher.run(), name="webhook-dispatcher")
                )
            interval = settings.reconcile_interval_s
            relay_task = asyncio.create_task(relay.run(), name="outbox-relay")
            started.push_async_callback(_finish_relay, relay, relay_task)
            for work, name in (
                (gauges.run(stop, settings.ops_sample_interval_s), "ops-gauges"),
                (handlers.payment_reconciler.run(stop, interval), "reconciler"),
                (handlers.refund_reconciler.run(stop, interval), "refund-reconciler"),
                (handlers.capture_reconciler.run(stop, interval), "capture-reconciler"),
                (handlers.cancel_reconciler.run(stop, interval), "cancel-reconciler"),
                (
                    handlers.authorization_expiry.run(
                        stop, settings.authorization_check_interval_s
                    ),
                    "authorization-expiry",
                ),
                (
                    run_periodically(
                        stop,
                        settings.key_expiry_interval_s,
                        housekeeping,
                        "idempotency keys expired, outbox rows and webhook deliveries pruned, "
                        "tokens shredded, webhook secrets sealed",
                    ),
                    "housekeeping",
                ),
            ):
                started.push_async_callback(_cancel, asyncio.create_task(work, name=name))

            self._started.relay, self._started.assignment = relay, assignment
            # Runs first at exit: a consumer shutting down is not ready.
            started.callback(self._started.clear)
            runner_task = asyncio.create_task(runner.run(), name="command-runner")
            stop_task = asyncio.create_task(stop.wait(), name="stop-signal")
            started.push_async_callback(_cancel, stop_task)
            log.info("consumer started", extra={"topic": settings.commands_topic})
            await asyncio.wait({runner_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            runner.stop()
            await runner_task  # finishes its batch and commits; re-raises a crash
        log.info("consumer stopped")


async def _finish_relay(relay: OutboxRelay, task: asyncio.Task[None]) -> None:
    """Let the relay end its pass; cancelled only if the pass outlasts the bound (a broker
    that does not answer). A cancelled pass may leave acknowledged rows unmarked: published
    again, and dropped by readers by their event id."""
    relay.finish()
    try:
        await asyncio.wait_for(task, _RELAY_FINISH_S)
    except TimeoutError:
        log.warning("outbox relay did not finish its pass in time; cancelled")


async def _cancel(task: asyncio.Task[None] | asyncio.Task[bool]) -> None:
    """Cancel a background task and wait for it to end."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
