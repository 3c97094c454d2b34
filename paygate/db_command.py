"""``paygate db``: the version of the database schema.

    paygate db upgrade   bring the database to the newest revision
    paygate db current   show the database's revision beside the newest one

Against ``PAYGATE_DATABASE_URL``. Results go to stdout as JSON, diagnostics to stderr.
Every process also upgrades at start; ``upgrade`` is for running it ahead of a rollout
(docs/migrations.md). Exit codes: 0 done, and for ``current`` the database is at the newest
revision; 1 ``current`` only: the database is behind, empty or never stamped; 2 bad
arguments, or a schema ``upgrade`` does not recognise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from paygate.database import engine_for
from paygate.event_loop import use_event_loop
from paygate.jsonlog import configure_logging
from paygate.settings import Settings
from paygate.settings_errors import load_settings
from persistence.migrate import (
    UnrecognisedSchemaError,
    current_revision,
    head_revision,
    upgrade_to_head,
)

EXIT_OK = 0
EXIT_BEHIND = 1
EXIT_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paygate db", description="the database schema")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("upgrade", help="bring the database to the newest revision")
    sub.add_parser("current", help="show the database's revision and the newest one")
    return parser


async def run_db_command(settings: Settings, args: argparse.Namespace) -> int:
    engine = engine_for(settings)
    try:
        before = await current_revision(engine)
        if args.action == "upgrade":
            await upgrade_to_head(engine)
            print(json.dumps({"from": before, "to": await current_revision(engine)}))
            return EXIT_OK
        head = head_revision()
        print(json.dumps({"current": before, "head": head, "upToDate": before == head}))
        return EXIT_OK if before == head else EXIT_BEHIND
    finally:
        await engine.dispose()


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    settings = load_settings("paygate db")
    # The steps of an upgrade (a stamp, each revision applied) are logged on stderr.
    configure_logging(settings.log_level, settings.log_account_fields)
    use_event_loop(settings.event_loop)
    try:
        return asyncio.run(run_db_command(settings, args))
    except UnrecognisedSchemaError as exc:
        print(f"paygate db: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
