"""The composition root of the facade: one function, collaborators in, application out.

Production passes the Kafka publisher, the SQL store's queries, the results-topic waiter
and the API-key store (behind a short cache); tests pass fakes. Nothing is created at
import time.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Final

from aiohttp import web

from domain.clock import utc_now
from http_facade.access_log import access_log_middleware
from http_facade.asyncapi_routes import add_asyncapi_routes
from http_facade.auth import Authenticator, auth_middleware
from http_facade.body_deadline import body_deadline_middleware
from http_facade.cancel_routes import add_cancel_routes
from http_facade.capture_routes import add_capture_routes
from http_facade.database_guard import (
    DatabaseGuard,
    GuardedAuthenticator,
    GuardedNotices,
    GuardedQueries,
    GuardedRateLimiter,
    GuardedRefunds,
    GuardedVault,
    GuardedWaiter,
    GuardedWebhooks,
    IsOutage,
    never,
)
from http_facade.errors import error_middleware
from http_facade.notification_routes import add_notification_routes
from http_facade.openapi_routes import add_openapi_routes
from http_facade.ops_routes import add_ops_routes
from http_facade.payment_methods_routes import add_payment_method_routes
from http_facade.payments_routes import add_payment_routes
from http_facade.ports import (
    CommandPublisher,
    NoNotices,
    NoticeSink,
    NotificationReader,
    PaymentMethodVault,
    PaymentQueries,
    RefundQueries,
    ResultWaiter,
    WebhookEndpoints,
)
from http_facade.rate_limit import RateLimiter, rate_limit_middleware
from http_facade.refunds_routes import add_refund_routes
from http_facade.security_headers import security_headers_middleware
from http_facade.state import (
    ACCOUNT_KEY,
    CLOCK,
    ENCRYPTION_KEY,
    MAX_WAIT_S,
    METRICS,
    NOTICE_READERS,
    NOTICE_SINK,
    PUBLISHER,
    QUERIES,
    READINESS,
    REFUNDS,
    TOKEN_RETENTION,
    VAULT,
    WAITER,
    WEBHOOK_URL_CHECK,
    WEBHOOKS,
)
from http_facade.webhook_routes import add_webhook_routes
from http_facade.webhook_url_check import EndpointUrlCheck
from telemetry.metrics import Metrics
from telemetry.outage_log import OutageLog
from telemetry.readiness import Readiness

_log = logging.getLogger("paygate.http")

# A create-payment body is well under 2 KiB; 64 KiB leaves room for metadata and refuses
# anything that would only cost memory.
MAX_BODY_BYTES: Final = 64 * 1024
# Seconds a client has to send a request body once its headers arrived.
DEFAULT_BODY_TIMEOUT_S: Final = 15.0


def build_app(
    *,
    publisher: CommandPublisher,
    queries: PaymentQueries,
    refunds: RefundQueries,
    waiter: ResultWaiter,
    metrics: Metrics,
    account_key: bytes,
    authenticator: Authenticator,
    rate_limiter: RateLimiter,
    vault: PaymentMethodVault,
    token_retention: timedelta = timedelta(days=30),
    encryption_key: tuple[str, str, str] | None = None,
    readiness: Readiness | None = None,
    max_wait_s: float = 30.0,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    clock: Callable[[], datetime] = utc_now,
    is_database_outage: IsOutage = never,
    webhooks: WebhookEndpoints | None = None,
    webhook_url_check: EndpointUrlCheck | None = None,
    notice_readers: Mapping[str, NotificationReader] | None = None,
    notice_sink: NoticeSink | None = None,
) -> web.Application:
    """The facade's aiohttp application, serving plain requests; TLS is added by the server.

    ``max_wait_s`` caps ``Prefer: wait=N``. Prefer speaks in whole seconds, so the cap is
    rounded down to one and must be at least 1. Every route but the public ones
    (:data:`http_facade.auth.PUBLIC_ROUTES`) needs an API key that ``authenticator``
    knows, and is limited per client by ``rate_limiter``. Providers' notifications
    (``POST /v1/notifications/{provider}``) are read by ``notice_readers`` (by route name)
    and recorded by ``notice_sink``. ``GET /readyz`` runs the checks
    of ``readiness``; without it there are none, and the facade is always ready.

    ``queries, ``refunds``, ``waiter``, ``authenticator`` and ``notice_sink`` use the
    database; an exception of theirs that ``is_database_outage`` says means the database is
    unreachable is answered 503 ``service_unavailable`` and logged once per outage
    (:mod:`http_facade.database_guard`). The facade knows no database driver: the
    composition root passes the judgement (``persistence.availability``).

    ``webhooks`` serves ``/v1/webhook_endpoints`` (without it, those routes are not
    there); ``webhook_url_check`` judges the URLs registered, by default as in
    production (https, public addresses only).
    ``vault`` keeps every account number a request carries: the facade publishes tokens
    only (http_facade.account_vaulting); ``encryption_key`` (key id, algorithm, public key
    PEM) is published at ``GET /v1/payment_methods/encryption_key``.
    """
    if not (max_wait_s >= 1 and math.isfinite(max_wait_s)):  # also refuses NaN
        raise ValueError(f"max_wait_s must be at least 1 second, got {max_wait_s!r}")
    guard = DatabaseGuard(is_database_outage, OutageLog("database", _log))
    # Order matters: the access log is outermost so it records the status the error
    # middleware settled on, and the client id auth found. Auth comes before the rate
    # limit (which is per client) and both before the body is read, so a client without
    # a key, or over its limit, costs no more than its headers.
    app = web.Application(
        middlewares=[
            access_log_middleware,
            security_headers_middleware,
            error_middleware,
            auth_middleware(GuardedAuthenticator(authenticator, guard)),
            rate_limit_middleware(GuardedRateLimiter(rate_limiter, guard)),
            body_deadline_middleware(body_timeout_s),
        ],
        client_max_size=MAX_BODY_BYTES,
    )
    app[PUBLISHER] = publisher
    app[QUERIES] = GuardedQueries(queries, guard)
    app[REFUNDS] = GuardedRefunds(refunds, guard)
    app[WAITER] = GuardedWaiter(waiter, guard)
    app[METRICS] = metrics
    app[READINESS] = readiness if readiness is not None else Readiness()
    app[MAX_WAIT_S] = math.floor(max_wait_s)
    app[CLOCK] = clock
    app[ACCOUNT_KEY] = account_key
    app[NOTICE_READERS] = dict(notice_readers or {})
    sink = notice_sink if notice_sink is not None else NoNotices()
    app[NOTICE_SINK] = GuardedNotices(sink, guard)
    add_notification_routes(app)
    app[VAULT] = GuardedVault(vault, guard)
    app[TOKEN_RETENTION] = token_retention
    app[ENCRYPTION_KEY] = encryption_key
    add_payment_routes(app)
    add_payment_method_routes(app)
    add_refund_routes(app)
    add_capture_routes(app)
    if webhooks is not None:
        app[WEBHOOKS] = GuardedWebhooks(webhooks, guard)
        app[WEBHOOK_URL_CHECK] = webhook_url_check or EndpointUrlCheck(development=False)
        add_webhook_routes(app)
    add_cancel_routes(app)
    add_ops_routes(app)
    add_openapi_routes(app)
    add_asyncapi_routes(app)
    return app
