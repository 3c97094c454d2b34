"""Every failure leaves the facade as the catalogue's error body, with the code's status.

::

    {"error": {"code", "message", "category", "retryable", "param"?, "decline_code"?}}

Three kinds of failure reach the middleware:

- :class:`PaygateError` from validation, the domain or a dependency that is down: its code
  says everything. A 503 (``service_unavailable``) also carries ``Retry-After``.
- aiohttp's own ``HTTPException`` (no route, wrong method, body too large): mapped to
  the nearest catalogue code, so clients never see aiohttp's plain-text pages.
- anything else is a bug: ``internal_error`` with a generic message. The details go to
  the log with the traceback, never to the client, since they may name internals.

A client that goes away mid-request (aiohttp fails the body read with
``ConnectionResetError``) is no bug of ours: it is logged as one ``info`` line, without a
traceback, and answered 499 (nginx's "client closed request"), which nobody receives but
the access log records. Under overload, clients that time out are many; an error with a
traceback for each would bury the errors that matter.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from domain.error_info import ErrorInfo
from domain.errors import CATALOGUE, ErrorCode, PaygateError
from http_facade.state import REQUEST_ID

_log = logging.getLogger("paygate.http")

_FROM_HTTP_STATUS: Final[Mapping[int, tuple[ErrorCode, str]]] = MappingProxyType(
    {
        400: (ErrorCode.INVALID_REQUEST, "the request is malformed"),
        401: (ErrorCode.AUTHENTICATION_FAILED, "authentication is required"),
        404: (ErrorCode.NOT_FOUND, "no such resource"),
        405: (ErrorCode.METHOD_NOT_ALLOWED, "this method is not allowed on this resource"),
        413: (ErrorCode.REQUEST_TOO_LARGE, "the request body is too large"),
        415: (ErrorCode.UNSUPPORTED_MEDIA_TYPE, "the request body's media type is not supported"),
        429: (ErrorCode.RATE_LIMITED, "too many requests"),
    }
)
_INTERNAL_MESSAGE: Final = (
    "an unexpected error occurred; retry with the same Idempotency-Key, "
    "it cannot cause a second payment"
)

# Seconds a client is asked to wait after a 503 (Kafka or the database unreachable). Most
# outages that are over by themselves (a leader election, a database failover) take a few
# seconds; a client that keeps getting 503 should back off further on its own.
UNAVAILABLE_RETRY_AFTER_S: Final = 2

# Headers of an aiohttp exception that still mean something on our body: Allow on 405.
_KEPT_HEADERS: Final = ("Allow",)
# nginx's "client closed request": the client left before its answer.
CLIENT_CLOSED_REQUEST: Final = 499


def error_response(info: ErrorInfo, headers: Mapping[str, str] | None = None) -> web.Response:
    """The error body with the code's status; a 503 always says when to come back."""
    status = CATALOGUE[info.code].http_status
    if status == 503 and (headers is None or hdrs.RETRY_AFTER not in headers):
        headers = {**(headers or {}), hdrs.RETRY_AFTER: str(UNAVAILABLE_RETRY_AFTER_S)}
    return web.json_response({"error": info.to_dict()}, status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except PaygateError as error:
        return error_response(ErrorInfo.from_error(error))
    except web.HTTPException as exc:
        if exc.status < 400:  # redirects and the like are answers, not failures
            raise
        return _from_http_exception(exc)
    except ConnectionResetError:
        if not _client_gone(request):
            _log_bug(request)
            return error_response(ErrorInfo(ErrorCode.INTERNAL_ERROR, _INTERNAL_MESSAGE))
        _log.info(
            "client went away before its answer",
            extra={"request_id": request.get(REQUEST_ID), "method": request.method},
        )
        return web.Response(status=CLIENT_CLOSED_REQUEST, reason="Client Closed Request")
    except Exception:
        _log_bug(request)
        return error_response(ErrorInfo(ErrorCode.INTERNAL_ERROR, _INTERNAL_MESSAGE))


def _client_gone(request: web.Request) -> bool:
    """The connection to the client is closed (not some other connection reset)."""
    transport = request.transport
    return transport is None or transport.is_closing()


def _log_bug(request: web.Request) -> None:
    """Called inside an ``except`` block: the traceback is logged with it."""
    _log.exception(
        "unhandled error in request handler",
        extra={"request_id": request.get(REQUEST_ID), "method": request.method},
    )


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    code, message = _FROM_HTTP_STATUS.get(
        exc.status,
        (ErrorCode.INVALID_REQUEST, "the request is malformed")
        if exc.status < 500
        else (ErrorCode.INTERNAL_ERROR, _INTERNAL_MESSAGE),
    )
    kept = {name: exc.headers[name] for name in _KEPT_HEADERS if name in exc.headers}
    return error_response(ErrorInfo(code, message), headers=kept)
