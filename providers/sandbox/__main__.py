"""Run the sandbox acquirer as a standalone HTTP service.

    python -m providers.sandbox --port 0 --ledger sandbox.db [--latency-ms 5] [--seed 1]
        [--account-latency-s 2] [--action-ttl-s 900]
        [--alipay-private-key alipay.pem --alipay-app APP_ID=app_public.pem ...]

With ``--alipay-private-key`` (the simulator's own, "Alipay's", RSA private key, PKCS#1
PEM) and one ``--alipay-app`` per app (its id and the file of its public key), the service
also answers Alipay's ``/gateway.do`` (providers.sandbox.alipay).

Once listening it prints ``SANDBOX_URL=http://<host>:<port>`` as one line on stdout, so a
parent process can start it on port 0 and read the port it got. SIGTERM or SIGINT stops it
cleanly (exit code 0). Logs go to stderr, keeping stdout for that one line.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from providers.sandbox.acquirer import SandboxAcquirer
from providers.sandbox.alipay import AlipaySimulator, Rsa2Keys
from providers.sandbox.config import SandboxConfig
from providers.sandbox.ledger import Ledger, MemoryLedger
from providers.sandbox.service import build_sandbox_app
from providers.sandbox.sqlite_ledger import SqliteLedger

log = logging.getLogger("providers.sandbox")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m providers.sandbox", description="The sandbox acquirer over HTTP."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--ledger", help="SQLite file for the ledger (default: in memory)")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--latency-jitter-ms", type=float, default=0.0)
    parser.add_argument("--failure-rate", type=float, default=0.0)
    parser.add_argument("--timeout-rate", type=float, default=0.0)
    parser.add_argument("--slow-delay-s", type=float, default=2.0)
    parser.add_argument("--hang-s", type=float, default=60.0)
    parser.add_argument(
        "--account-latency-s",
        type=float,
        default=2.0,
        help="how long the latency test numbers wait before deciding",
    )
    parser.add_argument(
        "--refund-settle-s",
        type=float,
        default=1.0,
        help="how long refunds of the 'refunds pending' test number stay pending",
    )
    parser.add_argument(
        "--action-ttl-s",
        type=float,
        default=900.0,
        help="how long the payer-action test number waits for the payer",
    )
    parser.add_argument("--alipay-private-key", help="PEM file: the Alipay simulator's private key")
    parser.add_argument(
        "--alipay-app",
        action="append",
        default=[],
        metavar="APP_ID=PUBLIC_KEY_FILE",
        help="an app the Alipay simulator accepts, with its public key (PEM file)",
    )
    parser.add_argument("--alipay-pay-delay-s", type=float, default=1.0)
    parser.add_argument(
        "--authorization-hold-s",
        type=float,
        default=SandboxConfig().authorization_hold_s,
        help="how long an authorization (capture false) is held before it expires",
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--shutdown-timeout-s",
        type=float,
        default=2.0,
        help="how long requests in flight (a hang, say) may finish after SIGTERM",
    )
    parser.add_argument("--log-level", default="WARNING")
    return parser


async def _serve(args: argparse.Namespace, config: SandboxConfig) -> None:
    ledger: Ledger = SqliteLedger(args.ledger) if args.ledger else MemoryLedger()
    app = build_sandbox_app(SandboxAcquirer(ledger, config), _alipay(args))
    runner = web.AppRunner(app, shutdown_timeout=args.shutdown_timeout_s)
    await runner.setup()
    try:
        await web.TCPSite(runner, args.host, args.port).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        # The runner's sockets hold the port the OS chose when --port is 0.
        host, port = runner.addresses[0][:2]
        url_host = f"[{host}]" if ":" in host else host
        print(f"SANDBOX_URL=http://{url_host}:{port}", flush=True)
        log.info("sandbox listening on %s:%s", host, port)
        await stop.wait()
        log.info("sandbox stopping")
    finally:
        await runner.cleanup()


def _alipay(args: argparse.Namespace) -> AlipaySimulator | None:
    """The Alipay simulator the flags ask for (None without --alipay-private-key)."""
    if not args.alipay_private_key:
        return None
    private_pem = Path(args.alipay_private_key).read_text()
    apps: dict[str, str] = {}
    for app in args.alipay_app:
        app_id, _, key_file = app.partition("=")
        if not app_id or not key_file:
            raise SystemExit("--alipay-app takes APP_ID=PUBLIC_KEY_FILE")
        apps[app_id] = Path(key_file).read_text()
    return AlipaySimulator(
        alipay_keys=Rsa2Keys.of_private(private_pem),
        apps=apps,
        pay_delay_s=args.alipay_pay_delay_s,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        config = SandboxConfig(
            latency_ms=args.latency_ms,
            latency_jitter_ms=args.latency_jitter_ms,
            failure_rate=args.failure_rate,
            timeout_rate=args.timeout_rate,
            slow_delay_s=args.slow_delay_s,
            hang_s=args.hang_s,
            account_latency_s=args.account_latency_s,
            refund_settle_s=args.refund_settle_s,
            action_ttl_s=args.action_ttl_s,
            authorization_hold_s=args.authorization_hold_s,
            seed=args.seed,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    asyncio.run(_serve(args, config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
