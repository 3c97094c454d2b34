"""Serving the facade: HTTPS only.

There is no plain-HTTP variant on purpose. Payment bodies carry account numbers; a
listener that could be started without TLS would eventually be, by someone, in production.
"""

from __future__ import annotations

import ssl

from aiohttp import web


async def run_facade(
    app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext
) -> web.AppRunner:
    """Start serving ``app`` over TLS on ``host:port`` and return the runner.

    ``port`` 0 picks a free port; ``runner.addresses`` tells which. Stop with
    ``await runner.cleanup()``.
    """
    # Checked at run time too: a caller without type checking could pass None, and
    # aiohttp would then quietly serve plain HTTP.
    if not isinstance(ssl_context, ssl.SSLContext):
        raise TypeError("run_facade serves HTTPS only: ssl_context must be an ssl.SSLContext")
    # aiohttp's own access log is off: the access-log middleware writes one structured
    # line per request instead, with the route template rather than the raw path.
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
