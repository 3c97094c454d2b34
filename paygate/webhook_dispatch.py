"""Builds a webhook dispatcher from the settings, for the consumer and ``paygate webhooks
run`` alike, and runs it with its sender started and stopped around it."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from domain.webhook_retry import RetryPolicy
from paygate.settings import Environment, Settings
from persistence.webhook_store import WebhookStore
from producer.webhook_dispatcher import WebhookDispatcher
from producer.webhook_sender import WebhookSender
from telemetry.metrics import Metrics


def webhook_sender(settings: Settings) -> WebhookSender:
    return WebhookSender(
        development=settings.env is Environment.DEVELOPMENT,
        timeout_s=settings.webhooks_timeout_s,
    )


def webhook_dispatcher(
    settings: Settings, store: WebhookStore, sender: WebhookSender, metrics: Metrics
) -> WebhookDispatcher:
    return WebhookDispatcher(
        store,
        sender,
        metrics,
        policy=RetryPolicy(window=timedelta(hours=settings.webhooks_retry_window_h)),
        max_in_flight=settings.webhooks_max_in_flight,
        per_endpoint=settings.webhooks_per_endpoint,
        # An attempt takes at most the timeout; the rest is room to record it.
        lease=timedelta(seconds=3 * settings.webhooks_timeout_s + 5),
    )


async def run_dispatcher(
    settings: Settings, store: WebhookStore, metrics: Metrics, stop: asyncio.Event
) -> None:
    """Deliver webhooks until ``stop`` is set."""
    sender = webhook_sender(settings)
    await sender.start()
    try:
        dispatcher = webhook_dispatcher(settings, store, sender, metrics)
        work = asyncio.create_task(dispatcher.run(), name="webhook-dispatcher")
        await stop.wait()
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
    finally:
        await sender.stop()
