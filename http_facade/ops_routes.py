"""Probe endpoints on the public port: ``/healthz`` for liveness, ``/readyz`` for readiness.

``/metrics`` is not here: it is served by the facade's ops listener only
(paygate.ops_server), never on the internet-facing port.
"""

from __future__ import annotations

from aiohttp import web

from http_facade.state import READINESS


def add_ops_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


async def healthz(request: web.Request) -> web.Response:
    """Liveness only: the process answers. Kafka or store trouble shows in other signals."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 when every readiness check passes, else 503; the body names each check.

    A probe answer, not a request failure: the 503 body is this report, not the error
    catalogue's body, so a probe or an operator sees which check failed.
    """
    report = await request.app[READINESS].report()
    return web.json_response(report.body(), status=report.http_status)
