"""A request body must arrive within a deadline once its headers have.

aiohttp bounds the wait for a request's headers (the keep-alive timeout, see
:mod:`http_facade.server`) but not for its body: a handler's ``await request.read()``
waits as long as the client trickles bytes. This middleware reads the body first, under
``timeout_s``; a client that stalls gets 408 and its connection closed. The body is kept
on the request, so the handler's own ``read()`` returns it at once.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from domain.error_info import ErrorInfo
from domain.errors import CATALOGUE, ErrorCode


def body_deadline_middleware(timeout_s: float) -> Middleware:
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")

    @web.middleware
    async def read_body_in_time(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.body_exists:
            try:
                async with asyncio.timeout(timeout_s):
                    await request.read()
            except TimeoutError:
                return _too_slow(timeout_s)
        return await handler(request)

    return read_body_in_time


def _too_slow(timeout_s: float) -> web.Response:
    info = ErrorInfo(
        ErrorCode.REQUEST_TIMEOUT,
        f"the request body did not arrive within {timeout_s:g} seconds",
    )
    status = CATALOGUE[ErrorCode.REQUEST_TIMEOUT].http_status
    response = web.json_response({"error": info.to_dict()}, status=status)
    # Whatever the client sends next is the rest of a body we gave up on, not a request.
    response.force_close()
    return response
