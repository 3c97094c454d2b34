"""``POST /v1/notifications/{provider}``: a provider's signed asynchronous notification.

Public (no API key: the provider cannot hold one); trusted only once the provider's reader
verified its signature (for Alipay, through the SDK). Answers:

- ``200 success`` (exactly the text Alipay expects) once the outcome is recorded, or was
  already (a replay is idempotent), or there is nothing to record;
- ``400 invalid_request``: unsigned, forged, another app's, unreadable; or an amount, trade
  or provider that is not the attempt's (logged). Nothing changes;
- ``404 not_found``: no such provider here, or no such payment;
- ``503 service_unavailable``: another worker holds the payment right now; the provider
  sends the notification again, which is what it does for any answer but ``success``.
"""

from __future__ import annotations

import logging

from aiohttp import web

from domain.error_info import ErrorInfo
from domain.errors import ErrorCode, PaygateError
from http_facade.errors import error_response
from http_facade.state import NOTICE_READERS, NOTICE_SINK
from providers.notices import NoticeRefusedError, NoticeResult

log = logging.getLogger("paygate.http.notifications")

NOTIFICATIONS_PATH = "/v1/notifications/{provider}"
# Alipay's expected answer to a notification it need not send again.
ACKNOWLEDGED = "success"


def add_notification_routes(app: web.Application) -> None:
    app.router.add_post(NOTIFICATIONS_PATH, receive_notification)


async def receive_notification(request: web.Request) -> web.Response:
    reader = request.app[NOTICE_READERS].get(request.match_info["provider"])
    if reader is None:
        raise PaygateError(ErrorCode.NOT_FOUND, "no such notification endpoint")
    if request.content_type != "application/x-www-form-urlencoded":
        raise PaygateError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            "a notification is an application/x-www-form-urlencoded form",
        )
    form = await request.post()
    params = {key: value for key, value in form.items() if isinstance(value, str)}
    try:
        notice = reader.read(params)
    except NoticeRefusedError as exc:
        log.warning("notification refused: %s", exc, extra={"provider": reader.provider})
        raise PaygateError(ErrorCode.INVALID_REQUEST, str(exc), param="sign") from None
    result = await request.app[NOTICE_SINK].record(notice)
    if result in (
        NoticeResult.RECORDED,
        NoticeResult.ALREADY,
        NoticeResult.IGNORED,
        NoticeResult.STRAY,
    ):
        return web.Response(text=ACKNOWLEDGED, content_type="text/plain")
    if result is NoticeResult.UNKNOWN:
        raise PaygateError(ErrorCode.NOT_FOUND, "no payment has this trade")
    if result is NoticeResult.MISMATCH:
        raise PaygateError(
            ErrorCode.INVALID_REQUEST,
            "the notification's amount, trade or provider is not the payment's",
            param="out_trade_no",
        )
    return error_response(
        ErrorInfo(ErrorCode.SERVICE_UNAVAILABLE, "the payment is being worked on; send it again"),
        headers={"Retry-After": "1"},
    )
