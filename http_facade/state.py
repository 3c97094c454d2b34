"""Typed keys for what the facade shares through the application and the request.

Application keys hold the collaborators :func:`http_facade.app.build_app` was given;
request keys carry what a handler learned (ids) to the access log written after it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Final

from aiohttp import web

from http_facade.ports import (
    CommandPublisher,
    NoticeSink,
    NotificationReader,
    PaymentMethodVault,
    PaymentQueries,
    RefundQueries,
    ResultWaiter,
    WebhookEndpoints,
)
from http_facade.webhook_url_check import EndpointUrlCheck
from telemetry.metrics import Metrics
from telemetry.readiness import Readiness

PUBLISHER: Final = web.AppKey[CommandPublisher]("publisher")
QUERIES: Final = web.AppKey[PaymentQueries]("queries")
REFUNDS: Final = web.AppKey[RefundQueries]("refunds")
WAITER: Final = web.AppKey[ResultWaiter]("waiter")
METRICS: Final = web.AppKey[Metrics]("metrics")
READINESS: Final = web.AppKey[Readiness]("readiness")
MAX_WAIT_S: Final = web.AppKey[int]("max_wait_s")
CLOCK: Final = web.AppKey[Callable[[], datetime]]("clock")
ACCOUNT_KEY: Final = web.AppKey[bytes]("account_key")
WEBHOOKS: Final = web.AppKey[WebhookEndpoints]("webhooks")
WEBHOOK_URL_CHECK: Final = web.AppKey[EndpointUrlCheck]("webhook_url_check")
# Providers' notification readers by route name, and where their notices are recorded.
NOTICE_READERS: Final = web.AppKey[Mapping[str, NotificationReader]]("notice_readers")
NOTICE_SINK: Final = web.AppKey[NoticeSink]("notice_sink")
VAULT: Final = web.AppKey[PaymentMethodVault]("vault")
# Lifetime of a token not saved for reuse (PAYGATE_VAULT_TOKEN_RETENTION_DAYS).
TOKEN_RETENTION: Final = web.AppKey[timedelta]("token_retention")
# paygate's published account encryption key: (key id, algorithm, public key PEM).
ENCRYPTION_KEY: Final = web.AppKey[tuple[str, str, str] | None]("encryption_key")

REQUEST_ID: Final = web.RequestKey[str]("request_id")
PAYMENT_REQUEST_ID: Final = web.RequestKey[str]("payment_request_id")
ORDER_ID: Final = web.RequestKey[str]("order_id")
# The authenticated client: set by the auth middleware on every non-public request.
CLIENT_ID: Final = web.RequestKey[str]("client_id")
