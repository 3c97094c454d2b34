"""``paygate webhooks``: see webhook deliveries, send them again, or run a dispatcher.

    paygate webhooks list [--client ID] [--endpoint ID] [--status pending|delivered|failed]
                          [--limit N]
    paygate webhooks retry DELIVERY_ID
    paygate webhooks run

Against ``PAYGATE_DATABASE_URL``; ``run`` also opens the vault (its keys decrypt the
endpoints' signing secrets, as in the consumer). ``list`` prints one JSON object per
delivery (newest first), ``retry`` the delivery, pending again and due now (the next
dispatcher pass sends it, with the same ``webhook-id``). ``run`` delivers webhooks until
SIGTERM or SIGINT, its metrics on the ops listener (``PAYGATE_METRICS_HOST``/``PORT``): for
an estate that sets ``PAYGATE_WEBHOOKS_DISPATCH=false`` on its consumers (docs/webhooks.md).
Exit codes: 0 done; 2 bad arguments or an unknown delivery id.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence

from domain.webhook_views import DeliveryInfo
from paygate.database import open_database
from paygate.event_loop import use_event_loop
from paygate.jsonlog import configure_logging
from paygate.ops_server import ops_url, start_ops_server
from paygate.production_checks import Uses, refuse_unsafe_settings
from paygate.settings import Settings
from paygate.vault_wiring import open_vault
from paygate.webhook_dispatch import run_dispatcher
from telemetry.metrics import Metrics
from telemetry.readiness import Readiness

EXIT_OK = 0
EXIT_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paygate webhooks", description="webhook deliveries")
    sub = parser.add_subparsers(dest="action", required=True)
    listing = sub.add_parser("list", help="list deliveries, newest first")
    listing.add_argument("--client", help="only this API client's")
    listing.add_argument("--endpoint", help="only this endpoint's")
    listing.add_argument("--status", choices=["pending", "delivered", "failed"])
    listing.add_argument("--limit", type=int, default=50)
    retry = sub.add_parser("retry", help="send a delivery again now")
    retry.add_argument("delivery_id")
    sub.add_parser("run", help="deliver webhooks until stopped")
    return parser


def delivery_json(delivery: DeliveryInfo) -> str:
    def at(moment: object) -> object:
        return None if moment is None else moment.isoformat()  # type: ignore[attr-defined]

    return json.dumps(
        {
            "id": delivery.id,
            "endpointId": delivery.endpoint_id,
            "eventId": delivery.event_id,
            "eventType": delivery.event_type,
            "status": delivery.status,
            "attempts": delivery.attempts,
            "nextAttemptAt": at(delivery.next_attempt_at),
            "lastAttemptAt": at(delivery.last_attempt_at),
            "lastResponseCode": delivery.last_status_code,
            "lastError": delivery.last_error,
            "createdAt": at(delivery.created_at),
        }
    )


async def run_webhooks_command(settings: Settings, args: argparse.Namespace) -> int:
    db = await open_database(settings)
    try:
        store = db.webhooks
        if args.action == "list":
            for delivery in await store.deliveries(
                client_id=args.client,
                endpoint_id=args.endpoint,
                status=args.status,
                limit=args.limit,
            ):
                print(delivery_json(delivery))
        elif args.action == "retry":
            retried = await store.retry(args.delivery_id, client_id=None)
            if retried is None:
                print(
                    f"paygate webhooks: no delivery {args.delivery_id!r} of a live endpoint",
                    file=sys.stderr,
                )
                return EXIT_ERROR
            print(delivery_json(retried))
        else:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            # Its metrics (and /healthz) on the ops listener, as the consumer's.
            metrics = Metrics()
            ops = await start_ops_server(
                metrics, Readiness(), settings.metrics_host, settings.metrics_port
            )
            print(f"PAYGATE_OPS_URL={ops_url(ops)}", flush=True)
            # The vault opens each endpoint's signing secret for its attempts.
            opened = await open_vault(settings, db.engine, db.writes)
            try:
                sealing = store.with_secrets(opened.vault)
                await sealing.secrets.seal_clear()  # left in clear by revision 0017
                await run_dispatcher(settings, sealing, metrics, stop)
            finally:
                await opened.close()
                await ops.cleanup()
    finally:
        await db.close()
    return EXIT_OK


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    if args.action == "list" and not 1 <= args.limit <= 1000:
        print("paygate webhooks: --limit must be from 1 to 1000", file=sys.stderr)
        return EXIT_ERROR
    settings = Settings()
    if args.action == "run":  # it decrypts signing secrets with the vault's data keys
        refuse_unsafe_settings("paygate webhooks run", settings, Uses.VAULT_KEYS)
    configure_logging(settings.log_level, settings.log_account_fields)
    use_event_loop(settings.event_loop)
    try:
        return asyncio.run(run_webhooks_command(settings, args))
    except KeyboardInterrupt:
        return 130
