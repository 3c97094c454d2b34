"""The ``paygate`` command line: one entry point for every process of the service."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from paygate.jsonlog import configure_logging
from paygate.settings import Settings

log = logging.getLogger("paygate")


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def _consumer(settings: Settings) -> None:
    from paygate.consumer_service import ConsumerService
    from paygate.metrics import Metrics
    from paygate.ops_server import start_ops_server
    from paygate.providers import build_providers

    stop = asyncio.Event()
    _stop_on_signals(stop)
    metrics = Metrics()
    ops = await start_ops_server(metrics, settings.metrics_host, settings.metrics_port)
    try:
        await ConsumerService(settings, build_providers(settings, metrics), metrics).run(stop)
    finally:
        await ops.cleanup()


async def _facade(settings: Settings) -> None:
    from paygate.facade_service import FacadeService
    from paygate.metrics import Metrics

    stop = asyncio.Event()
    _stop_on_signals(stop)
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    ready.add_done_callback(lambda f: print(f"PAYGATE_URL={f.result()}", flush=True))
    await FacadeService(settings, Metrics()).run(stop, ready)


async def _acquirer(settings: Settings) -> None:
    from paygate.acquirer_service import run_acquirer

    stop = asyncio.Event()
    _stop_on_signals(stop)
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    ready.add_done_callback(lambda f: print(f"SANDBOX_URL={f.result()}", flush=True))
    await run_acquirer(settings, stop, ready)


async def _topics(settings: Settings) -> None:
    from paygate.topics import ensure_topics

    created = await ensure_topics(settings)
    print("created: " + (", ".join(created) if created else "nothing (all topics exist)"))


async def _reconcile(settings: Settings) -> None:
    from paygate.reconcile_command import print_reconcile

    await print_reconcile(settings)


async def _expire_keys(settings: Settings) -> None:
    from datetime import timedelta

    from consumer.key_expiry import KeyExpiry
    from persistence.engine import create_engine, create_schema
    from persistence.payment_store import PaymentStore

    engine = create_engine(settings.database_url)
    try:
        await create_schema(engine)
        retention = timedelta(days=settings.idempotency_key_retention_days)
        expired = await KeyExpiry(PaymentStore(engine), retention).run_once()
        print(json.dumps({"expired": expired}))
    finally:
        await engine.dispose()


async def _dev(settings: Settings) -> None:
    from paygate.dev import run_dev

    stop = asyncio.Event()
    _stop_on_signals(stop)
    await run_dev(settings, stop)


_COMMANDS: dict[str, tuple[str, Callable[[Settings], Coroutine[Any, Any, None]]]] = {
    "dev": ("run the whole stack locally (starts Kafka when none is configured)", _dev),
    "consumer": ("run the command consumer", _consumer),
    "facade": ("run the HTTPS REST facade", _facade),
    "acquirer": ("run the sandbox acquirer as an HTTP service", _acquirer),
    "topics": ("create the Kafka topics if missing", _topics),
    "reconcile": ("resolve in-doubt payments by asking the provider, once", _reconcile),
    "expire-keys": ("expire idempotency keys older than the retention, once", _expire_keys),
}


KAFKA_COMMAND = "kafka"
CHAOS_COMMAND = "chaos"
DLQ_COMMAND = "dlq"
APIKEY_COMMAND = "apikey"
DB_COMMAND = "db"


def subcommands() -> list[str]:
    return [*_COMMANDS, KAFKA_COMMAND, CHAOS_COMMAND, DLQ_COMMAND, APIKEY_COMMAND, DB_COMMAND]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paygate", description="paygate payment gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, _) in _COMMANDS.items():
        sub.add_parser(name, help=help_text)
    sub.add_parser(KAFKA_COMMAND, help="run a local single-node Kafka broker in the foreground")
    sub.add_parser(
        CHAOS_COMMAND, help="chaos run: SIGKILL consumers, restart Kafka, check the effects"
    )
    sub.add_parser(DLQ_COMMAND, help="list dead letters and re-publish selected ones")
    sub.add_parser(APIKEY_COMMAND, help="create, revoke and list the facade's API keys")
    sub.add_parser(DB_COMMAND, help="upgrade the database schema, or show its revision")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == [CHAOS_COMMAND]:
        # The chaos run has options of its own; paygate.chaos parses them.
        from paygate.chaos import main as chaos_main

        return chaos_main(arguments[1:])
    if arguments[:1] == [DLQ_COMMAND]:
        # `paygate dlq list|republish` has options of its own; paygate.dlq parses them.
        from paygate.dlq import main as dlq_main

        return dlq_main(arguments[1:])
    if arguments[:1] == [APIKEY_COMMAND]:
        # `paygate apikey create|revoke|list` has options of its own.
        from paygate.apikey_command import main as apikey_main

        return apikey_main(arguments[1:])
    if arguments[:1] == [DB_COMMAND]:
        # `paygate db upgrade|current` has subcommands of its own.
        from paygate.db_command import main as db_main

        return db_main(arguments[1:])
    args = build_parser().parse_args(arguments)
    if args.command == KAFKA_COMMAND:
        from paygate.kafka.__main__ import main as kafka_main

        return kafka_main([])
    settings = Settings()
    configure_logging(settings.log_level)
    _, run = _COMMANDS[args.command]
    try:
        asyncio.run(run(settings))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
