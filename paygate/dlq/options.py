"""The command line of ``paygate dlq``: ``list`` and ``republish``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from domain.errors import ErrorCode
from paygate.dlq.entries import Handle


@dataclass(frozen=True, slots=True)
class ListOptions:
    limit: int | None
    as_json: bool
    code: str | None


@dataclass(frozen=True, slots=True)
class RepublishOptions:
    handles: tuple[Handle, ...] | None  # None: select by --all or --code
    every: bool
    code: str | None
    to_original: bool
    dry_run: bool
    as_json: bool


Options = ListOptions | RepublishOptions


def _handles(text: str) -> tuple[Handle, ...]:
    handles: list[Handle] = []
    for part in text.split(","):
        if not part.strip():
            continue
        try:
            handle = Handle.parse(part)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if handle not in handles:
            handles.append(handle)
    if not handles:
        raise argparse.ArgumentTypeError("give at least one PARTITION:OFFSET")
    return tuple(handles)


def _code(text: str) -> str:
    try:
        return ErrorCode(text).value
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an error code (dead letters carry e.g. malformed_message, "
            "unknown_schema, invalid_amount, unsupported_currency, invalid_request)"
        ) from None


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paygate dlq",
        description="List the dead-letter topic, and re-publish selected dead letters. "
        "Kafka and the topics come from KAFKA_BOOTSTRAP_SERVERS, PAYGATE_DLQ_TOPIC and "
        "PAYGATE_COMMANDS_TOPIC. Exit codes: 0 done, 2 bad arguments, unknown offsets or "
        "Kafka unreachable (nothing was re-published unless printed).",
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="{list,republish}")

    listing = sub.add_parser(
        "list",
        help="list dead letters (never their value bytes)",
        description="Read the dead-letter topic from the beginning up to its end at the "
        "start of the run (no consumer group, nothing committed) and print one line per "
        "dead letter; its PARTITION:OFFSET is the handle `republish --offsets` takes.",
    )
    listing.add_argument("--limit", type=_positive, metavar="N", help="show the first N only")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.add_argument("--code", type=_code, help="only dead letters with this error code")

    again = sub.add_parser(
        "republish",
        help="re-publish selected dead letters, unchanged, to the command topic",
        description="Send the selected dead letters' original key and value, unchanged, to "
        "the command topic (or the original topic with --to-original), with the headers "
        "paygate.republished.from and paygate.republished.at. Nothing is removed from "
        "the DLQ: re-publishing twice sends twice, which is safe (same idempotency key, "
        "same payment).",
    )
    which = again.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--offsets",
        type=_handles,
        metavar="P:O[,P:O...]",
        help="dead letters by DLQ partition:offset, as `list` shows them",
    )
    which.add_argument("--all", action="store_true", help="every dead letter")
    which.add_argument("--code", type=_code, help="every dead letter with this error code")
    again.add_argument(
        "--to-original",
        action="store_true",
        help="send to the topic named in the paygate.original.topic header instead of "
        "PAYGATE_COMMANDS_TOPIC",
    )
    again.add_argument(
        "--dry-run", action="store_true", help="show what would be re-published, send nothing"
    )
    again.add_argument("--json", action="store_true", help="one JSON object per line")
    return parser


def parse_options(argv: Sequence[str]) -> Options:
    """Parse ``argv``; bad arguments exit with code 2 (argparse's usage error)."""
    args = build_parser().parse_args(list(argv))
    if args.action == "list":
        return ListOptions(limit=args.limit, as_json=args.json, code=args.code)
    return RepublishOptions(
        handles=args.offsets,
        every=args.all,
        code=args.code,
        to_original=args.to_original,
        dry_run=args.dry_run,
        as_json=args.json,
    )
