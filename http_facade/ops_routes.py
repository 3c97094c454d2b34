"""Operational endpoints: ``/healthz`` for liveness, ``/readyz`` for readiness, ``/metrics``
for Prometheus."""

from __future__ import annotations

from aiohttp import hdrs, web

from http_facade.state import METRICS, READINESS


def add_ops_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)


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


async def metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[METRICS].exposition()
    # Set as a header: the exposition type carries parameters (version, charset) that
    # aiohttp's content_type argument does not accept.
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: content_type})
