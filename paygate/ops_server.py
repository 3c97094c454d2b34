"""The ops listener: plain HTTP ``/metrics``, ``/healthz`` and ``/readyz`` for operators.

Every paygate process that serves metrics has one (the consumer on
``PAYGATE_METRICS_HOST``:``PAYGATE_METRICS_PORT``, the facade on
``PAYGATE_FACADE_OPS_HOST``:``PAYGATE_FACADE_OPS_PORT``). It is meant for a scraper and
probes on the same host or a private network, never for the internet: the facade's public
HTTPS port serves no ``/metrics``, since the metrics describe traffic, clients' error rates
and internals that are nobody else's business.

``/healthz`` is liveness only (the event loop answers); ``/readyz`` runs the process's
readiness checks (telemetry.readiness) and answers 503 naming the failing ones.
"""

from __future__ import annotations

from aiohttp import hdrs, web

from telemetry.metrics import Metrics
from telemetry.readiness import Readiness


def build_ops_app(metrics: Metrics, readiness: Readiness) -> web.Application:
    async def metrics_handler(_request: web.Request) -> web.Response:
        body, content_type = metrics.exposition()
        # A header, not content_type=: the exposition type carries parameters.
        return web.Response(body=body, headers={hdrs.CONTENT_TYPE: content_type})

    async def health_handler(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def ready_handler(_request: web.Request) -> web.Response:
        report = await readiness.report()
        return web.json_response(report.body(), status=report.http_status)

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", health_handler)
    app.router.add_get("/readyz", ready_handler)
    return app


async def start_ops_server(
    metrics: Metrics, readiness: Readiness, host: str, port: int
) -> web.AppRunner:
    """Serve until ``await runner.cleanup()``; ``port`` 0 picks a free one
    (:func:`ops_url` tells which)."""
    runner = web.AppRunner(build_ops_app(metrics, readiness), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def ops_url(runner: web.AppRunner) -> str:
    """``http://host:port`` the runner listens on (IPv6 hosts in brackets)."""
    host, port = runner.addresses[0][:2]
    shown = f"[{host}]" if ":" in str(host) else str(host)
    return f"http://{shown}:{port}"
