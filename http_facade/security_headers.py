"""Headers every facade response carries, whatever produced it (a handler or an error).

* ``Strict-Transport-Security``: the facade is HTTPS-only; browsers must not even try HTTP.
* ``Cache-Control: no-store``: payment data must not sit in shared or browser caches.
* ``X-Content-Type-Options: nosniff``: JSON is JSON, never sniffed into something else.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler

SECURITY_HEADERS: Final = MappingProxyType(
    {
        "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }
)


@web.middleware
async def security_headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
