"""``POST /v1/notifications/{provider}``: a provider's signed asynchronous notification.

Public (no API key: the provider cannot hold one); trusted only once the provider's reader
verified its signature (for Alipay and Stripe, through their SDKs). The body comes in the
provider's own media type (Alipay: a form; Stripe: a JSON event, verified over its raw
bytes); each provider's answers are in its reader's :class:`NotificationTerms`. Answers:

- ``200`` with the provider's acknowledgement (Alipay: exactly the text ``success``;
  Stripe: ``{"received": true}``, JSON) once the outcome is recorded, or was already (a
  replay is idempotent), or there is nothing to record (for Stripe also an event it does
  not read, a charge made outside paygate, or an attempt key no payment here has: Stripe
  sends every event of the account);
- ``400 invalid_request``: unsigned, forged, stale, another app's or account's,
  unreadable; or an amount, trade or provider that is not the attempt's (logged). Nothing
  changes, and nothing of the body is echoed;
- ``404 not_found``: no such provider here, or (Alipay) no such payment;
- ``415``: not the provider's media type;

Every refusal (400, the 404 of a trade no payment has, 415) of a configured provider is
counted in ``paygate_provider_notifications_refused_total{provider,reason}`` (a fixed set
of reasons, :class:`providers.notices.RefusalReason`; nothing of the payload), since the
provider resends a refused notification for days and only a log line said so before.
- ``503 service_unavailable``: another worker holds the payment right now, or the
  database cannot be reached (http_facade.database_guard: nothing was written); the
  provider sends the notification again, which is what it does for any answer but its
  acknowledgement.
"""

from __future__ import annotations

import logging

from aiohttp import web

from domain.error_info import ErrorInfo
from domain.errors import ErrorCode, PaygateError
from http_facade.errors import error_response
from http_facade.state import METRICS, NOTICE_READERS, NOTICE_SINK
from providers.notices import (
    NoticeRefusedError,
    NoticeResult,
    NotificationTerms,
    OutsideRefundFailedNotice,
    ProviderNotice,
    ReceivedNotification,
    RefundNotice,
    RefusalReason,
)

log = logging.getLogger("paygate.http.notifications")

NOTIFICATIONS_PATH = "/v1/notifications/{provider}"

# What the sink did that needs no resend, whatever the provider.
_DONE = frozenset(
    {NoticeResult.RECORDED, NoticeResult.ALREADY, NoticeResult.IGNORED, NoticeResult.STRAY}
)


def add_notification_routes(app: web.Application) -> None:
    """The route; set ``app``'s METRICS and NOTICE_READERS first."""
    app.router.add_post(NOTIFICATIONS_PATH, receive_notification)
    refused = app[METRICS].notifications_refused
    failed_later = app[METRICS].refunds_failed_after_success
    for reader in app[NOTICE_READERS].values():
        # From 0, for the alerts' increase(): a refund, or a stray charge's reversal, the
        # provider failed after it succeeded (consumer.refund_notices).
        failed_later.labels(reader.provider)
        app[METRICS].stray_charges.labels(reader.provider, "reversal_failed")
        for reason in RefusalReason:
            # Every series exists from 0 at start, so the alert's increase() sees the first
            # refusal too (a counter born at 1 would show no increase until the second).
            refused.labels(reader.provider, reason.value)


async def receive_notification(request: web.Request) -> web.Response:
    reader = request.app[NOTICE_READERS].get(request.match_info["provider"])
    if reader is None:
        raise PaygateError(ErrorCode.NOT_FOUND, "no such notification endpoint")
    terms = reader.terms
    refused = request.app[METRICS].notifications_refused
    if request.content_type != terms.media_type:
        refused.labels(reader.provider, RefusalReason.MEDIA_TYPE.value).inc()
        raise PaygateError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"a {reader.provider} notification is {terms.media_type}",
        )
    form = await request.post()  # empty unless the body is a form
    notification = ReceivedNotification(
        body=await request.read(),  # read once by the body deadline, kept on the request
        headers=request.headers,
        form={key: value for key, value in form.items() if isinstance(value, str)},
    )
    try:
        notice = reader.receive(notification)
    except NoticeRefusedError as exc:
        refused.labels(reader.provider, exc.reason.value).inc()
        log.warning(
            "notification refused: %s",
            exc,
            extra={"provider": reader.provider, "reason": exc.reason.value},
        )
        raise PaygateError(
            ErrorCode.INVALID_REQUEST, str(exc), param=terms.signature_param
        ) from None
    if notice is None:
        return _acknowledged(terms)  # genuine, with nothing for paygate (the reader logged)
    result = await request.app[NOTICE_SINK].record(notice)
    if result in _DONE:
        return _acknowledged(terms)
    if result is NoticeResult.UNKNOWN:
        if terms.account_wide:
            log.warning(
                "notification for an attempt key or refund no payment here has: another "
                "system's on the same provider account; acknowledged",
                extra={"provider": reader.provider, **_about(notice)},
            )
            return _acknowledged(terms)
        refused.labels(reader.provider, RefusalReason.UNKNOWN_PAYMENT.value).inc()
        raise PaygateError(ErrorCode.NOT_FOUND, "no payment has this trade")
    if result is NoticeResult.MISMATCH:
        refused.labels(reader.provider, RefusalReason.MISMATCH.value).inc()
        raise PaygateError(
            ErrorCode.INVALID_REQUEST,
            "the notification's amount, trade or provider is not the payment's",
            param=terms.attempt_key_param,
        )
    return error_response(
        ErrorInfo(ErrorCode.SERVICE_UNAVAILABLE, "the payment is being worked on; send it again"),
        headers={"Retry-After": "1"},
    )


def _about(notice: ProviderNotice) -> dict[str, str]:
    if isinstance(notice, RefundNotice):
        return {"refund_id": notice.refund_id}
    if isinstance(notice, OutsideRefundFailedNotice):
        return {"provider_reference": notice.provider_reference}
    return {"attempt_key": notice.attempt_key}


def _acknowledged(terms: NotificationTerms) -> web.Response:
    return web.Response(text=terms.acknowledgement, content_type=terms.acknowledgement_type)
