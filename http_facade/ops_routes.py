"""Operational endpoints: ``/healthz`` for liveness probes, ``/metrics`` for Prometheus."""

from __future__ import annotations

from aiohttp import hdrs, web

from http_facade.state import METRICS


def add_ops_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)


async def healthz(request: web.Request) -> web.Response:
    """Liveness only: the process answers. Kafka or store trouble shows in other signals."""
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[METRICS].exposition()
    # Set as a header: the exposition type carries parameters (version, charset) that
    # aiohttp's content_type argument does not accept.
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: content_type})
