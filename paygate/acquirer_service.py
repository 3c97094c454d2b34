"""Runs the sandbox acquirer as an HTTP service from paygate's settings."""

from __future__ import annotations

import asyncio

from aiohttp import web

from paygate.settings import Settings
from providers.sandbox import SandboxAcquirer, SqliteLedger, build_sandbox_app


async def run_acquirer(
    settings: Settings, stop: asyncio.Event, ready: asyncio.Future[str] | None = None
) -> None:
    """Serve until ``stop`` is set; ``ready`` receives the base URL once listening."""
    acquirer = SandboxAcquirer(SqliteLedger(str(settings.acquirer_ledger)))
    runner = web.AppRunner(build_sandbox_app(acquirer), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.acquirer_host, settings.acquirer_port).start()
        host, port = runner.addresses[0][:2]
        if ready is not None and not ready.done():
            ready.set_result(f"http://{host}:{port}")
        await stop.wait()
    finally:
        await runner.cleanup()
