"""Which providers' notifications the facade accepts, and where they are recorded."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from consumer.payment_events import PaymentEvents
from consumer.provider_notices import NoticeRecorder
from consumer.refund_events import RefundEvents
from consumer.refund_notices import RefundFailures
from http_facade.ports import NoNotices, NoticeSink, NotificationReader
from paygate.alipay_dev import with_dev_keys
from paygate.settings import Environment, Settings
from persistence.database import Database
from persistence.provider_refund_store import ProviderRefundStore
from providers.alipay.notifications import AlipayNotifications
from providers.stripe.webhooks import StripeWebhooks, livemode_of
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics

log = logging.getLogger("paygate.notices")


def notification_wiring(
    settings: Settings, db: Database, messages: PaymentMessages, metrics: Metrics | None = None
) -> tuple[Mapping[str, NotificationReader], NoticeSink]:
    """A reader per configured provider that notifies (its notices are written through the
    payment store, claims and all): Alipay's when ``alipay`` is a provider, Stripe's when
    ``stripe`` is one and its webhook secret is set; none otherwise."""
    readers = notification_readers(settings)
    if not readers:
        return {}, NoNotices()
    sink = NoticeRecorder(
        store=db.payments,
        events=PaymentEvents(messages, settings.results_topic),
        strays=db.strays,  # money a notice reports on a key the payment left: the sweep's
        # refunds made outside paygate that a notice reports on a captured payment
        refunds=ProviderRefundStore(db.writes),
        # refunds the provider failed, after it answered them or while they were open
        refund_failures=RefundFailures(
            store=db.refunds,
            events=RefundEvents(messages, settings.results_topic),
            strays=db.strays,  # a stray charge's reversal the provider failed after it
            metrics=metrics,
        ),
    )
    return readers, sink


def notification_readers(settings: Settings) -> dict[str, NotificationReader]:
    """The readers by route name (``/v1/notifications/<name>``); both may be configured."""
    readers: dict[str, NotificationReader] = {}
    if "alipay" in settings.provider_names:
        alipay = with_dev_keys(settings)
        if alipay.alipay_app_id is None or alipay.alipay_public_key is None:
            raise SystemExit("the alipay provider needs PAYGATE_ALIPAY_APP_ID and PUBLIC_KEY")
        readers["alipay"] = AlipayNotifications(
            app_id=alipay.alipay_app_id, alipay_public_key=alipay.alipay_public_key
        )
    if "stripe" in settings.provider_names:
        secret = settings.stripe_webhook_secret
        if secret is not None:
            readers["stripe"] = StripeWebhooks(secret=secret, livemode=_stripe_mode(settings))
        else:
            # Production refuses this (paygate.production_checks); a development stack
            # without a Stripe endpoint of its own runs on, warned.
            log.warning(
                "PAYGATE_STRIPE_WEBHOOK_SECRET is unset: Stripe's events are not received, "
                "so a charge Stripe's search shows late is never reversed"
            )
    return readers


def _stripe_mode(settings: Settings) -> bool | None:
    """Live events only with a live key, test events with a test key; production, which
    refuses test keys, takes live events even where the facade is given no key."""
    mode = livemode_of(settings.stripe_api_key)
    if mode is None and settings.env is Environment.PRODUCTION:
        return True
    return mode
