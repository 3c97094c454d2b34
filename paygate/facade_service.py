"""Wires and runs the HTTPS facade process."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from http_facade.app import build_app
from http_facade.result_listener import KafkaResultListener
from http_facade.server import run_facade
from http_facade.tls import ensure_self_signed_certificate, server_ssl_context
from paygate.metrics import Metrics
from paygate.settings import Settings
from persistence.engine import create_engine, create_schema
from persistence.payment_store import PaymentStore
from producer.command_publisher import KafkaCommandPublisher
from producer.kafka_producer import KafkaProducer
from schemas.payments import PaymentMessages

log = logging.getLogger("paygate.http")


@dataclass
class FacadeService:
    settings: Settings
    metrics: Metrics

    async def run(self, stop: asyncio.Event, ready: asyncio.Future[str] | None = None) -> None:
        """Serve until ``stop`` is set; ``ready`` receives the base URL once listening."""
        settings = self.settings
        if settings.tls_cert_file is not None and settings.tls_key_file is not None:
            cert, key = settings.tls_cert_file, settings.tls_key_file
        else:
            cert, key = ensure_self_signed_certificate(settings.tls_dir)
        engine = create_engine(settings.database_url)
        await create_schema(engine)
        store = PaymentStore(engine)
        messages = PaymentMessages.bundled()
        producer = KafkaProducer(settings.require_kafka(), client_id="paygate-facade")
        listener = KafkaResultListener(
            bootstrap_servers=settings.require_kafka(),
            topic=settings.results_topic,
            messages=messages,
            queries=store,
        )
        runner = None
        try:
            await producer.start()
            await listener.start()
            app = build_app(
                publisher=KafkaCommandPublisher(producer, messages, settings.commands_topic),
                queries=store,
                waiter=listener,
                metrics=self.metrics,
                account_key=settings.account_key,
                max_wait_s=settings.max_wait_s,
            )
            runner = await run_facade(
                app, settings.http_host, settings.http_port, server_ssl_context(cert, key)
            )
            port = runner.addresses[0][1]
            url = f"https://{settings.http_host}:{port}"
            log.info("facade listening", extra={"url": url})
            if ready is not None and not ready.done():
                ready.set_result(url)
            await stop.wait()
        finally:
            if runner is not None:
                await runner.cleanup()
            await listener.stop()
            await producer.stop()
            await engine.dispose()
