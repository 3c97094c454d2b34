"""Wires and runs the HTTPS facade process, and its plain-HTTP ops listener (``/metrics``,
``/healthz``, ``/readyz``) on ``PAYGATE_FACADE_OPS_HOST``:``PAYGATE_FACADE_OPS_PORT``."""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass, field
from datetime import timedelta

from aiohttp import web

from http_facade.app import build_app
from http_facade.auth_cache import CachedAuthenticator
from http_facade.ports import CommandPublisher, ResultWaiter
from http_facade.result_feed import KafkaResultFeed
from http_facade.result_listener import ResultListener
from http_facade.server import run_facade
from http_facade.shared_rate_limit import SharedRateLimiter
from http_facade.tls import ensure_self_signed_certificate, server_ssl_context
from http_facade.tls_reload import CertificateReloader, reload_on_sighup
from http_facade.webhook_url_check import EndpointUrlCheck
from paygate.database import open_database
from paygate.kafka_login import check_kafka_login
from paygate.kafka_security import kafka_client_options
from paygate.notices import notification_wiring
from paygate.ops_server import ops_url, start_ops_server
from paygate.schema_source import payment_messages
from paygate.settings import Environment, Settings
from paygate.vault_wiring import account_key_pair, open_vault
from persistence.availability import is_database_unavailable
from persistence.database import Database
from producer.command_publisher import KafkaCommandPublisher
from producer.kafka_producer import KafkaProducer
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from telemetry.readiness import Readiness
from vault.account_key_pair import PublishedKey
from vault.vault import Vault

log = logging.getLogger("paygate.http")


@dataclass
class _Started:
    """What the readiness checks look at, set as :meth:`FacadeService.run` starts it."""

    db: Database | None = None
    producer: KafkaProducer | None = None
    listener: ResultListener | None = None


@dataclass
class FacadeService:
    """The facade process. ``readiness`` holds its checks from construction on
    (``database``, ``kafka``, ``result_listener``), each failing until its part started;
    both the HTTPS port and the ops listener answer ``/readyz`` from it."""

    settings: Settings
    metrics: Metrics
    readiness: Readiness = field(default_factory=Readiness)
    # One of several worker processes sharing the port (paygate.facade_workers).
    reuse_port: bool = False
    _started: _Started = field(default_factory=_Started, init=False, repr=False)

    def __post_init__(self) -> None:
        started = self._started

        async def database() -> bool:
            if started.db is None:
                return False
            await started.db.backlogs.ping()
            return True

        async def kafka() -> bool:
            return started.producer is not None and await started.producer.reachable()

        async def result_listener() -> bool:
            return started.listener is not None and await started.listener.is_ready()

        self.readiness.add("database", database)
        self.readiness.add("kafka", kafka)
        self.readiness.add("result_listener", result_listener)

    async def run(
        self,
        stop: asyncio.Event,
        ready: asyncio.Future[str] | None = None,
        ops_ready: asyncio.Future[str] | None = None,
    ) -> None:
        """Serve until ``stop`` is set; ``ready`` receives the base URL once listening,
        ``ops_ready`` the ops listener's (which listens from the start, so probes see the
        facade not ready rather than not there)."""
        settings = self.settings
        ops = await start_ops_server(
            self.metrics, self.readiness, settings.facade_ops_host, settings.facade_ops_port
        )
        if ops_ready is not None and not ops_ready.done():
            ops_ready.set_result(ops_url(ops))
        try:
            await self._serve(stop, ready)
        finally:
            await ops.cleanup()

    async def _serve(self, stop: asyncio.Event, ready: asyncio.Future[str] | None) -> None:
        settings = self.settings
        if settings.tls_cert_file is not None and settings.tls_key_file is not None:
            cert, key = settings.tls_cert_file, settings.tls_key_file
        else:
            cert, key = ensure_self_signed_certificate(settings.tls_dir)
        kafka = kafka_client_options(settings)
        # A refused login or certificate ends the process here, before anything starts.
        await check_kafka_login(kafka)
        messages = await payment_messages(settings)
        ssl_context = server_ssl_context(cert, key)
        # Watches the files and loads a renewed pair into this same context, the one the
        # listener uses: new handshakes get it, open connections keep theirs.
        reloader = CertificateReloader(
            ssl_context,
            cert,
            key,
            interval_s=settings.tls_reload_interval_s,
            refuse_development=settings.env is not Environment.DEVELOPMENT,
            metrics=self.metrics,
        )
        db = await open_database(settings, self.metrics)
        opened = await open_vault(settings, db.engine, db.writes)
        # Secrets left in clear by revision 0017 (or an older release) are sealed now.
        await db.webhooks.with_secrets(opened.vault).secrets.seal_clear()
        published = account_key_pair(settings).published
        store, refunds = db.payments, db.refunds
        producer = KafkaProducer(
            kafka, client_id="paygate-facade", linger_ms=settings.kafka_linger_ms
        )
        listener = ResultListener(
            open_feed=functools.partial(KafkaResultFeed.open, kafka, settings.results_topic),
            decoder=messages,
            queries=store,
            refunds=refunds,
            metrics=self.metrics,
        )
        undo_sighup = reload_on_sighup(reloader)
        runner = None
        self._started.db = db
        try:
            await producer.start()
            self._started.producer = producer
            await listener.start()
            self._started.listener = listener
            app = facade_app(
                settings,
                self.metrics,
                db=db,
                readiness=self.readiness,
                publisher=KafkaCommandPublisher(
                    producer,
                    messages,
                    settings.commands_topic,
                    timeout_s=settings.publish_timeout_s,
                ),
                waiter=listener,
                messages=messages,
                vault=opened.vault,
                encryption_key=published,
            )
            await reloader.start()
            runner = await run_facade(
                app,
                settings.http_host,
                settings.http_port,
                ssl_context,
                idle_timeout_s=settings.http_idle_timeout_s,
                reuse_port=self.reuse_port,
            )
            port = runner.addresses[0][1]
            url = f"https://{settings.http_host}:{port}"
            log.info("facade listening", extra={"url": url})
            if ready is not None and not ready.done():
                ready.set_result(url)
            await stop.wait()
        finally:
            self._started.db = self._started.producer = self._started.listener = None
            if runner is not None:
                await runner.cleanup()
            undo_sighup()
            await reloader.stop()
            await listener.stop()
            await producer.stop()
            await opened.close()
            await db.close()


def facade_app(
    settings: Settings,
    metrics: Metrics,
    *,
    db: Database,
    publisher: CommandPublisher,
    waiter: ResultWaiter,
    vault: Vault,
    encryption_key: PublishedKey | None = None,
    readiness: Readiness | None = None,
    messages: PaymentMessages | None = None,
) -> web.Application:
    """The facade's application as the service wires it: the SQL stores behind its ports,
    API keys from the store behind a short cache, the rate limit's buckets in the store
    (shared by every instance and worker), and database outages recognised by
    :func:`persistence.availability.is_database_unavailable`. Providers' notifications are
    accepted for the configured providers that send them (paygate.notices)."""
    readers, sink = notification_wiring(
        settings, db, messages or PaymentMessages.bundled(), metrics
    )
    return build_app(
        publisher=publisher,
        queries=db.payments,
        refunds=db.refunds,
        waiter=waiter,
        metrics=metrics,
        readiness=readiness,
        account_key=settings.account_key,
        vault=vault,
        token_retention=timedelta(days=settings.vault_token_retention_days),
        encryption_key=None
        if encryption_key is None
        else (encryption_key.key_id, encryption_key.algorithm, encryption_key.public_key_pem),
        authenticator=CachedAuthenticator(db.api_keys, ttl_s=settings.api_key_cache_s),
        rate_limiter=SharedRateLimiter(
            db.rate_limits, rate_per_s=settings.rate_limit_per_s, burst=settings.rate_limit_burst
        ),
        max_wait_s=settings.max_wait_s,
        body_timeout_s=settings.http_body_timeout_s,
        is_database_outage=is_database_unavailable,
        webhooks=db.webhooks.with_secrets(vault),
        webhook_url_check=EndpointUrlCheck(development=settings.env is Environment.DEVELOPMENT),
        notice_readers=readers,
        notice_sink=sink,
    )
