"""A small plain-HTTP server for /metrics and /healthz of background processes.

It is meant for a scraper on the same host or network; the public facade is HTTPS only.
"""

from __future__ import annotations

from aiohttp import web

from telemetry.metrics import Metrics


def build_ops_app(metrics: Metrics) -> web.Application:
    async def metrics_handler(_request: web.Request) -> web.Response:
        body, content_type = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def health_handler(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", health_handler)
    return app


async def start_ops_server(metrics: Metrics, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(build_ops_app(metrics), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
