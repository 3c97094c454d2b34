"""The ``paygate`` command line: one entry point for every process of the service."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from paygate.event_loop import use_event_loop
from paygate.jsonlog import configure_logging
from paygate.production_checks import Uses, refuse_unsafe_settings
from paygate.settings import Settings
from paygate.settings_errors import load_settings

log = logging.getLogger("paygate")


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def _tracing(settings: Settings, service_name: str) -> contextlib.AbstractContextManager[object]:
    """Tracing for a long-running process, when configured (before it builds anything the
    instrumentations patch: applications, HTTP sessions, Kafka clients, engines)."""
    from telemetry.tracing import TracingConfig, process_tracing

    config = TracingConfig.of(settings.otlp_endpoint, settings.trace_sample_ratio)
    return process_tracing(config, service_name)


async def _consumer(settings: Settings) -> None:
    with _tracing(settings, "paygate-consumer"):
        await _run_consumer(settings)


async def _run_consumer(settings: Settings) -> None:
    from paygate.consumer_service import ConsumerService
    from paygate.ops_server import ops_url, start_ops_server
    from paygate.providers import build_providers
    from telemetry.metrics import Metrics

    stop = asyncio.Event()
    _stop_on_signals(stop)
    metrics = Metrics()
    # Built first: its readiness checks are registered (failing) before /readyz answers.
    service = ConsumerService(settings, build_providers(settings, metrics), metrics)
    ops = await start_ops_server(
        metrics, service.readiness, settings.metrics_host, settings.metrics_port
    )
    print(f"PAYGATE_OPS_URL={ops_url(ops)}", flush=True)
    try:
        await service.run(stop)
    finally:
        await ops.cleanup()


async def _facade(settings: Settings) -> None:
    await _serve_facade(settings, announce=True)


async def _serve_facade(
    settings: Settings,
    *,
    announce: bool,
    reuse_port: bool = False,
    on_ready: Callable[[], None] | None = None,
) -> None:
    from paygate.facade_service import FacadeService
    from telemetry.metrics import Metrics

    stop = asyncio.Event()
    _stop_on_signals(stop)
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    if announce:
        ready.add_done_callback(lambda f: print(f"PAYGATE_URL={f.result()}", flush=True))
    if on_ready is not None:
        ready.add_done_callback(lambda _f: on_ready())
    ops_ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    ops_ready.add_done_callback(lambda f: print(f"PAYGATE_OPS_URL={f.result()}", flush=True))
    with _tracing(settings, "paygate-facade"):
        await FacadeService(settings, Metrics(), reuse_port=reuse_port).run(stop, ready, ops_ready)


def _facade_worker(settings: Settings, ready: Callable[[], None]) -> int:
    """One worker of ``paygate facade --workers N``: the supervisor announces the URL."""
    try:
        asyncio.run(_serve_facade(settings, announce=False, reuse_port=True, on_ready=ready))
    except KeyboardInterrupt:
        return 130
    return 0


async def _acquirer(settings: Settings) -> None:
    from paygate.acquirer_service import run_acquirer

    stop = asyncio.Event()
    _stop_on_signals(stop)
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    ready.add_done_callback(lambda f: print(f"SANDBOX_URL={f.result()}", flush=True))
    with _tracing(settings, "paygate-acquirer"):
        # The Alipay simulator posts its notifications to the facade by its service name
        # (docker-compose, Helm), whose certificate is a self-signed one for localhost: it
        # does not check it. This process runs in development only (production refuses it),
        # and what makes a notification authentic is its RSA2 signature, which paygate checks.
        await run_acquirer(settings, stop, ready, notify_ssl=False)


async def _topics(settings: Settings) -> None:
    from paygate.topics import TopicMismatchError, ensure_topics

    try:
        created = await ensure_topics(settings)
    except TopicMismatchError as exc:
        # Exit 1 with the differences: an operator decides, paygate changes nothing.
        raise SystemExit(f"paygate topics: {exc}") from None
    print("created: " + (", ".join(created) if created else "nothing (all topics exist)"))


async def _reconcile(settings: Settings) -> None:
    from paygate.reconcile_command import print_reconcile

    await print_reconcile(settings)


async def _expire_keys(settings: Settings) -> None:
    from datetime import timedelta

    from consumer.key_expiry import KeyExpiry
    from paygate.database import open_database

    db = await open_database(settings)
    try:
        retention = timedelta(days=settings.idempotency_key_retention_days)
        expired = await KeyExpiry(db.payments, retention).run_once()
        print(json.dumps({"expired": expired}))
    finally:
        await db.close()


async def _dev(settings: Settings) -> None:
    from devtools.dev import run_dev

    stop = asyncio.Event()
    _stop_on_signals(stop)
    await run_dev(settings, stop)


@dataclass(frozen=True, slots=True)
class _Command:
    help: str
    run: Callable[[Settings], Coroutine[Any, Any, None]]
    # What production checks it for (paygate.production_checks) before it starts.
    uses: Uses = Uses.NOTHING


_COMMANDS: dict[str, _Command] = {
    # Development by definition: run_dev switches to PAYGATE_ENV=development itself.
    "dev": _Command("run the whole stack locally (starts Kafka when none is configured)", _dev),
    "consumer": _Command(
        "run the command consumer",
        _consumer,
        Uses.FINGERPRINT_KEY | Uses.PROVIDERS | Uses.VAULT | Uses.KAFKA,
    ),
    "facade": _Command(
        "run the HTTPS REST facade",
        _facade,
        Uses.FINGERPRINT_KEY | Uses.TLS | Uses.VAULT | Uses.NOTICES | Uses.KAFKA,
    ),
    "acquirer": _Command(
        "run the sandbox acquirer as an HTTP service", _acquirer, Uses.SANDBOX_ACQUIRER
    ),
    "topics": _Command(
        "create the Kafka topics if missing; report existing ones that differ", _topics
    ),
    "reconcile": _Command(
        "resolve in-doubt payments by asking the provider, once; `reconcile settle ID` "
        "settles by hand one withheld past its provider's window",
        _reconcile,
        Uses.PROVIDERS | Uses.VAULT,
    ),
    "expire-keys": _Command("expire idempotency keys older than the retention, once", _expire_keys),
}


def production_uses(command: str) -> Uses:
    """What production checks ``command`` for before it starts; nothing for the others."""
    known = _COMMANDS.get(command)
    return known.uses if known is not None else Uses.NOTHING


KAFKA_COMMAND = "kafka"
CHAOS_COMMAND = "chaos"
DLQ_COMMAND = "dlq"
APIKEY_COMMAND = "apikey"
DB_COMMAND = "db"
SCHEMAS_COMMAND = "schemas"
WEBHOOKS_COMMAND = "webhooks"
KEYS_COMMAND = "keys"


def _chaos(arguments: list[str]) -> int:
    from devtools.chaos import main as chaos_main

    return chaos_main(arguments)


def _kafka(arguments: list[str]) -> int:
    from devtools.kafka.__main__ import main as kafka_main

    return kafka_main(arguments)


def _dlq(arguments: list[str]) -> int:
    from paygate.dlq import main as dlq_main

    return dlq_main(arguments)


def _apikey(arguments: list[str]) -> int:
    from paygate.apikey_command import main as apikey_main

    return apikey_main(arguments)


def _db(arguments: list[str]) -> int:
    from paygate.db_command import main as db_main

    return db_main(arguments)


def _schemas(arguments: list[str]) -> int:
    from paygate.schemas_command import main as schemas_main

    return schemas_main(arguments)


def _webhooks(arguments: list[str]) -> int:
    from paygate.webhooks_command import main as webhooks_main

    return webhooks_main(arguments)


def _keys(arguments: list[str]) -> int:
    from paygate.keys_command import main as keys_main

    return keys_main(arguments)


# Commands with options or subcommands of their own: they parse the rest of the command line
# themselves (and are imported only when run).
_TOOLS: dict[str, tuple[str, Callable[[list[str]], int]]] = {
    KAFKA_COMMAND: ("run a local single-node Kafka broker in the foreground", _kafka),
    CHAOS_COMMAND: ("chaos run: SIGKILL consumers, restart Kafka, check the effects", _chaos),
    DLQ_COMMAND: ("list dead letters and re-publish selected ones", _dlq),
    APIKEY_COMMAND: ("create, revoke and list the facade's API keys", _apikey),
    DB_COMMAND: ("upgrade the database schema, or show its revision", _db),
    SCHEMAS_COMMAND: ("register the Avro schemas with the Schema Registry", _schemas),
    WEBHOOKS_COMMAND: ("list webhook deliveries, send them again, or run a dispatcher", _webhooks),
    KEYS_COMMAND: ("rotate, re-wrap, retire and list the vault's data keys", _keys),
}


def subcommands() -> list[str]:
    return [*_COMMANDS, *_TOOLS]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paygate", description="paygate payment gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in _COMMANDS.items():
        command_parser = sub.add_parser(name, help=command.help)
        if name == "facade":
            command_parser.add_argument(
                "--workers",
                type=int,
                default=1,
                help="facade processes sharing the port (SO_REUSEPORT); default 1",
            )
        if name == "reconcile":
            from paygate.settle_args import add_settle_parser

            add_settle_parser(command_parser)
    for name, (help_text, _run) in _TOOLS.items():
        # Listed for --help; main() hands the command line to the tool before parsing.
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in _TOOLS:
        # The tool parses everything after its name itself, ``--help`` included.
        _help, run_tool = _TOOLS[arguments[0]]
        return run_tool(arguments[1:])
    args = build_parser().parse_args(arguments)
    settings = load_settings(f"paygate {args.command}")
    command = _COMMANDS[args.command]
    # Before anything is logged or started: the refusal is the only output.
    refuse_unsafe_settings(f"paygate {args.command}", settings, command.uses)
    configure_logging(settings.log_level, settings.log_account_fields)
    use_event_loop(settings.event_loop)
    if getattr(args, "reconcile_action", None) == "settle":
        from paygate.settle_command import run_settle

        return run_settle(settings, args)
    workers: int = getattr(args, "workers", 1)
    if workers < 1:
        raise SystemExit(f"paygate {args.command}: --workers must be at least 1")
    if workers > 1:
        from paygate.facade_workers import run_facade_workers

        return run_facade_workers(settings, workers, _facade_worker)
    try:
        asyncio.run(command.run(settings))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
