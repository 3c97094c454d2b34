"""Serving the facade: HTTPS only, with every connection's idle time bounded.

There is no plain-HTTP variant on purpose. Payment bodies carry account numbers; a
listener that could be started without TLS would eventually be, by someone, in production.

Slow and idle clients (slowloris) are bounded at three points:

* the TLS handshake: asyncio's own ``ssl_handshake_timeout`` (60 s), which aiohttp's
  sites do not expose;
* the request head: aiohttp's ``keepalive_timeout`` (``idle_timeout_s`` here). Its timer
  starts when the connection is made and again after each response, incoming bytes do
  not reset it, and it closes the connection if by then no complete request line and
  headers have arrived. So it bounds both an idle keep-alive connection and a client
  trickling its headers. (Armed at connection start since aio-libs/aiohttp#13681; the
  HTTPS integration tests check it.)
* the request body: :mod:`http_facade.body_deadline`, inside the application.

A request aiohttp cannot parse (a stray CR or LF in a header, an obs-fold) is answered 400
by aiohttp itself and logged on ``aiohttp.server`` with the parser's message, which quotes
the offending line: an ``Authorization`` line with a stray CR would put the API key in the
log. :class:`RedactParseErrors` keeps the quote out of the log. aiohttp also sends that
message back as the 400's body, and the quote may hold an account number typed into the
URL (``GET /v1/payments/4242 4242 4242 4242``, a query string with a stray DEL) or a
credential: :class:`_QuietParseErrors` answers with a fixed body instead.
"""

from __future__ import annotations

import logging
import ssl
from typing import Final

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

DEFAULT_IDLE_TIMEOUT_S: Final = 15.0
# After an answer sent before the body was read (401, 408, 429), aiohttp reads and drops
# the rest of the body for this long so the client sees the answer rather than a reset.
# A 64 KiB body needs far less; aiohttp's default of 10 s would hold a stalled client.
_LINGERING_S: Final = 2.0


class RedactParseErrors(logging.Filter):
    """Logs a request aiohttp refused to parse by the error's kind, without its message.

    The message and traceback quote the raw line that failed, which may be a credential.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = "malformed HTTP request refused: %s"
            record.args = (type(exc).__name__,)
            record.exc_info = None
            record.exc_text = None
        return True


# What a request aiohttp could not parse is answered: the status line says the rest.
PARSE_ERROR_BODY: Final = "400 Bad Request\n\nmalformed HTTP request"


class _QuietParseErrors(RequestHandler):
    """aiohttp's connection handler, but a request it cannot parse is answered without the
    parser's message (which quotes the raw line)."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, HttpProcessingError):
            message = PARSE_ERROR_BODY
        return super().handle_error(request, status, exc, message)


class _QuietServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _QuietParseErrors(self, loop=self._loop, **self._kwargs)


class _FacadeRunner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # aiohttp builds its Server itself (Application._make_handler) and offers no hook
        # for the handler's class: the server it built is given this one's __call__.
        server.__class__ = _QuietServer
        return server


def _redact_parse_errors() -> None:
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, RedactParseErrors) for f in logger.filters):
        logger.addFilter(RedactParseErrors())


async def run_facade(
    app: web.Application,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext,
    *,
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    reuse_port: bool = False,
) -> web.AppRunner:
    """Start serving ``app`` over TLS on ``host:port`` and return the runner.

    ``port`` 0 picks a free port; ``runner.addresses`` tells which. A connection that
    has not sent a complete request head within ``idle_timeout_s`` of opening, or of
    its previous response, is closed. Stop with ``await runner.cleanup()``.
    ``reuse_port`` binds with ``SO_REUSEPORT``, for several worker processes on one port
    (:mod:`paygate.facade_workers`).
    """
    # Checked at run time too: a caller without type checking could pass None, and
    # aiohttp would then quietly serve plain HTTP.
    if not isinstance(ssl_context, ssl.SSLContext):
        raise TypeError("run_facade serves HTTPS only: ssl_context must be an ssl.SSLContext")
    # aiohttp's own access log is off: the access-log middleware writes one structured
    # line per request instead, with the route template rather than the raw path.
    if not idle_timeout_s > 0:  # 0 would switch aiohttp's timer off altogether
        raise ValueError(f"idle_timeout_s must be positive, got {idle_timeout_s!r}")
    _redact_parse_errors()
    runner = _FacadeRunner(
        app, access_log=None, keepalive_timeout=idle_timeout_s, lingering_time=_LINGERING_S
    )
    await runner.setup()
    try:
        await web.TCPSite(
            runner, host, port, ssl_context=ssl_context, reuse_port=reuse_port or None
        ).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
