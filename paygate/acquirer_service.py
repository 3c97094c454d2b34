"""Runs the sandbox acquirer as an HTTP service from paygate's settings.

With ``PAYGATE_ALIPAY_DEV_KEYS_DIR`` it also serves the Alipay simulator's ``/gateway.do``,
with the test keys of that directory (generated on first start, paygate.alipay_dev) and
paygate's development app id as its one app.
"""

from __future__ import annotations

import asyncio
import ssl

from aiohttp import web

from paygate.alipay_dev import DEV_APP_ID, ensure_dev_keys
from paygate.settings import Settings
from providers.sandbox import SandboxAcquirer, SqliteLedger, build_sandbox_app
from providers.sandbox.alipay import AlipaySimulator


async def run_acquirer(
    settings: Settings,
    stop: asyncio.Event,
    ready: asyncio.Future[str] | None = None,
    *,
    notify_ssl: ssl.SSLContext | bool | None = None,
) -> None:
    """Serve until ``stop`` is set; ``ready`` receives the base URL once listening.

    ``notify_ssl``: how the Alipay simulator checks the HTTPS of the notify URL (see
    :class:`AlipaySimulator`).
    """
    acquirer = SandboxAcquirer(SqliteLedger(str(settings.acquirer_ledger)))
    app = build_sandbox_app(acquirer, alipay_simulator(settings, notify_ssl))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.acquirer_host, settings.acquirer_port).start()
        host, port = runner.addresses[0][:2]
        if ready is not None and not ready.done():
            ready.set_result(f"http://{host}:{port}")
        await stop.wait()
    finally:
        await runner.cleanup()


def alipay_simulator(
    settings: Settings, notify_ssl: ssl.SSLContext | bool | None = None
) -> AlipaySimulator | None:
    """The simulator of the dev keys directory; None when no such directory is set."""
    if settings.alipay_dev_keys_dir is None:
        return None
    keys = ensure_dev_keys(settings.alipay_dev_keys_dir)
    return AlipaySimulator(
        alipay_keys=keys.alipay, apps={DEV_APP_ID: keys.app.public_pem}, notify_ssl=notify_ssl
    )
