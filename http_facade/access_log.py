"""One JSON log line and one histogram observation per request, with the client id.

It runs outside the error middleware, so it sees the status the client really got. Routes
are labelled by their template ("/v1/payments/{paymentRequestId}"), never by the raw path:
a raw path would make one time series per payment id, and could carry whatever a client
typed into the URL.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler

from http_facade.errors import CLIENT_CLOSED_REQUEST
from http_facade.state import CLIENT_ID, METRICS, ORDER_ID, PAYMENT_REQUEST_ID, REQUEST_ID

_log = logging.getLogger("paygate.http")

REQUEST_ID_HEADER: Final = "X-Request-Id"
# A caller's request id is adopted only if it is short and plain, since it is logged.
_CALLER_REQUEST_ID: Final = re.compile(r"\A[A-Za-z0-9._:\-]{1,64}\Z")
# Methods outside this set share one label, so a client cannot mint label values.
_KNOWN_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_UNMATCHED_ROUTE: Final = "unmatched"
# nginx's "client closed request": the handler was cancelled, nobody got an answer.
_CLIENT_GONE: Final = CLIENT_CLOSED_REQUEST


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    request_id = _request_id(request)
    request[REQUEST_ID] = request_id
    status = 500  # what is recorded if something escapes the error middleware
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = _CLIENT_GONE
        raise
    else:
        status = response.status
        if not response.prepared:
            response.headers[REQUEST_ID_HEADER] = request_id
        return response
    finally:
        _record(request, status, time.perf_counter() - started)


def _request_id(request: web.Request) -> str:
    offered = request.headers.get(REQUEST_ID_HEADER, "")
    return offered if _CALLER_REQUEST_ID.match(offered) else uuid.uuid4().hex


def route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else _UNMATCHED_ROUTE


def _record(request: web.Request, status: int, duration_s: float) -> None:
    method = request.method if request.method in _KNOWN_METHODS else "OTHER"
    route = route_label(request)
    request.app[METRICS].http_request_seconds.labels(method, route, str(status)).observe(duration_s)
    fields: dict[str, object] = {
        "method": method,
        "route": route,
        "status": status,
        "duration_ms": round(duration_s * 1000, 3),
        "request_id": request[REQUEST_ID],
    }
    # Absent on public routes and on 401s; the API key itself is never logged.
    if CLIENT_ID in request:
        fields["client_id"] = request[CLIENT_ID]
    if PAYMENT_REQUEST_ID in request:
        fields["payment_request_id"] = request[PAYMENT_REQUEST_ID]
    if ORDER_ID in request:
        fields["order_id"] = request[ORDER_ID]
    _log.info("%s %s %d", method, route, status, extra=fields)
