"""The REST bench's ceiling: a bare aiohttp handler over the same TLS, in its own process.

``python -m devtools.bench.ceiling --tls-dir DIR`` answers ``POST /v1/payments`` by parsing
the JSON body and answering a small JSON 200, with nothing else: no middleware, database
or Kafka. What the facade does on the same machine, over the same TLS and HTTP stack,
cannot be faster than this; the gap between the two is the facade's own cost.
It prints ``CEILING_URL=https://host:port`` once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from http_facade.tls import ensure_self_signed_certificate, server_ssl_context


async def _create(request: web.Request) -> web.Response:
    body = json.loads(await request.read())
    return web.json_response({"orderId": body.get("orderId"), "status": "succeeded"})


async def _serve(tls_dir: Path) -> None:
    cert, key = ensure_self_signed_certificate(tls_dir)
    app = web.Application()
    app.router.add_post("/v1/payments", _create)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl_context(cert, key)).start()
    port = runner.addresses[0][1]
    print(f"CEILING_URL=https://127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.bench.ceiling")
    parser.add_argument("--tls-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.tls_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
