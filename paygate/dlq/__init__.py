"""``paygate dlq``: list the dead-letter topic and re-publish selected dead letters.

    python -m paygate.dlq list [--limit N] [--json] [--code CODE]
    python -m paygate.dlq republish (--offsets P:O[,P:O...] | --all | --code CODE)
                                    [--to-original] [--dry-run] [--json]

Results go to stdout, diagnostics to stderr. Exit codes: 0 done; 2 bad arguments, unknown
offsets, a missing topic or Kafka unreachable; 130 interrupted. See docs/dead-letters.md.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Mapping, Sequence

from aiokafka.errors import KafkaError
from pydantic import ValidationError

from paygate.dlq.entries import DeadLetter, DlqError, Handle, read_dead_letters
from paygate.dlq.options import ListOptions, Options, RepublishOptions, parse_options
from paygate.dlq.output import (
    entry_json,
    entry_line,
    republished_json,
    republished_line,
)
from paygate.dlq.republish import (
    HEADER_REPUBLISHED_AT,
    HEADER_REPUBLISHED_FROM,
    check_targets,
    republish,
)
from paygate.event_loop import use_event_loop
from paygate.kafka_login import check_kafka_login
from paygate.kafka_security import kafka_client_options
from paygate.settings import Settings
from paygate.settings_errors import describe

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "HEADER_REPUBLISHED_AT",
    "HEADER_REPUBLISHED_FROM",
    "DeadLetter",
    "Handle",
    "main",
    "run_dlq_command",
]

EXIT_OK = 0
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def _error(message: str) -> int:
    print(f"paygate dlq: {message}", file=sys.stderr)
    return EXIT_ERROR


async def run_dlq_command(settings: Settings, options: Options) -> int:
    bootstrap = settings.kafka_bootstrap_servers
    if not bootstrap:
        return _error("KAFKA_BOOTSTRAP_SERVERS is not set")
    try:
        kafka = kafka_client_options(settings)
        await check_kafka_login(kafka)
    except SystemExit as exc:  # KafkaSettingsError, KafkaLoginError: the message says it all
        return _error(str(exc))
    try:
        if isinstance(options, ListOptions):
            return await _list(kafka, settings.dlq_topic, options)
        return await _republish(kafka, settings, options)
    except DlqError as exc:
        return _error(str(exc))
    except (KafkaError, OSError) as exc:
        return _error(f"Kafka at {bootstrap} failed: {exc}")


async def _list(kafka: Mapping[str, object], topic: str, options: ListOptions) -> int:
    code = options.code
    entries = await read_dead_letters(
        kafka,
        topic,
        keep=lambda e: code is None or e.error_code == code,
        limit=options.limit,
    )
    for entry in entries:
        print(entry_json(entry) if options.as_json else entry_line(entry), flush=True)
    print(f"{len(entries)} dead letter(s) listed from {topic}", file=sys.stderr)
    return EXIT_OK


async def _republish(
    kafka: Mapping[str, object], settings: Settings, options: RepublishOptions
) -> int:
    topic = settings.dlq_topic
    wanted = set(options.handles) if options.handles is not None else None

    def selected(entry: DeadLetter) -> bool:
        if wanted is not None:
            return entry.handle in wanted
        return options.every or entry.error_code == options.code

    entries = await read_dead_letters(kafka, topic, keep=selected)
    if wanted is not None:
        missing = sorted(wanted - {e.handle for e in entries})
        if missing:
            raise DlqError(
                f"no dead letter at {', '.join(map(str, missing))} in {topic} "
                "(`paygate dlq list` shows the handles); nothing was re-published"
            )
    if not entries:
        print(f"nothing to re-publish: no dead letter in {topic} matches", file=sys.stderr)
        return EXIT_OK
    # Every target is checked before the first send: a bad selection sends nothing.
    targets = check_targets(
        entries, commands_topic=settings.commands_topic, to_original=options.to_original
    )
    if options.dry_run:
        for entry in entries:
            print(f"would republish {entry_line(entry)} -> {targets[entry.handle]}")
        return EXIT_OK
    count = 0
    async for done in republish(kafka, topic, entries, targets):
        count += 1
        print(republished_json(done) if options.as_json else republished_line(done), flush=True)
    print(
        f"{count} dead letter(s) re-published; they stay in {topic} as well",
        file=sys.stderr,
    )
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        options = parse_options(args)
    except SystemExit as exc:  # argparse: usage errors (2) and --help (0)
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    try:
        settings = Settings()
    except ValidationError as exc:
        print(describe("paygate dlq", exc), file=sys.stderr)
        return EXIT_ERROR
    _quiet_client_logs()
    use_event_loop(settings.event_loop)
    try:
        return asyncio.run(run_dlq_command(settings, options))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _quiet_client_logs() -> None:
    """Run as a command (no logging set up): aiokafka's retries would drown the output."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
