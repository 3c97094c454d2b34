"""Which providers' notifications the facade accepts, and where they are recorded."""

from __future__ import annotations

from collections.abc import Mapping

from consumer.payment_events import PaymentEvents
from consumer.provider_notices import NoticeRecorder
from http_facade.ports import NoNotices, NoticeSink, NotificationReader
from paygate.alipay_dev import with_dev_keys
from paygate.settings import Settings
from persistence.database import Database
from persistence.provider_refund_store import ProviderRefundStore
from providers.alipay.notifications import AlipayNotifications
from schemas.payments import PaymentMessages


def notification_wiring(
    settings: Settings, db: Database, messages: PaymentMessages
) -> tuple[Mapping[str, NotificationReader], NoticeSink]:
    """Alipay's reader when ``alipay`` is a configured provider (its notices are written
    through the payment store, claims and all); none otherwise."""
    if "alipay" not in settings.provider_names:
        return {}, NoNotices()
    settings = with_dev_keys(settings)
    if settings.alipay_app_id is None or settings.alipay_public_key is None:
        raise SystemExit("the alipay provider needs PAYGATE_ALIPAY_APP_ID and PUBLIC_KEY")
    reader = AlipayNotifications(
        app_id=settings.alipay_app_id, alipay_public_key=settings.alipay_public_key
    )
    sink = NoticeRecorder(
        store=db.payments,
        events=PaymentEvents(messages, settings.results_topic),
        strays=db.strays,  # money a notice reports on a key the payment left: the sweep's
        # refunds made outside paygate that a notice reports on a captured payment
        refunds=ProviderRefundStore(db.writes),
    )
    return {"alipay": reader}, sink
