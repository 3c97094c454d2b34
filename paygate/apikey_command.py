"""``paygate apikey``: issue, revoke and list the facade's API keys.

    paygate apikey create --client ID [--label TEXT]
    paygate apikey revoke KEY_ID
    paygate apikey list [--client ID]

Against ``PAYGATE_DATABASE_URL``. Results go to stdout as JSON (one object per line for
``list``), diagnostics to stderr. ``create`` prints the key in clear: the only time it is
ever shown. Exit codes: 0 done; 2 bad arguments or an unknown key id.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from paygate.database import open_database
from paygate.event_loop import use_event_loop
from paygate.settings import Settings
from paygate.settings_errors import load_settings
from persistence.api_key_store import ApiKeyInfo, check_client_id

EXIT_OK = 0
EXIT_ERROR = 2


def _client_id(text: str) -> str:
    try:
        return check_client_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paygate apikey", description="manage API keys")
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="issue a key for a client and print it once")
    create.add_argument("--client", required=True, type=_client_id, help="the client's id")
    create.add_argument("--label", help="a note on what the key is for")
    revoke = sub.add_parser("revoke", help="revoke a key: it stops working within seconds")
    revoke.add_argument("key_id", help="the key's id, as `list` shows it")
    listing = sub.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--client", type=_client_id, help="only this client's keys")
    return parser


def _info_json(info: ApiKeyInfo) -> str:
    return json.dumps(
        {
            "keyId": info.key_id,
            "clientId": info.client_id,
            "label": info.label,
            "createdAt": info.created_at.isoformat(),
            "revokedAt": info.revoked_at.isoformat() if info.revoked_at else None,
            "active": info.active,
        }
    )


async def run_apikey_command(settings: Settings, args: argparse.Namespace) -> int:
    db = await open_database(settings)
    try:
        store = db.api_keys
        if args.action == "create":
            issued = await store.create(args.client, args.label)
            print(
                json.dumps(
                    {"keyId": issued.key_id, "clientId": issued.client_id, "apiKey": issued.api_key}
                ),
                flush=True,
            )
            print("paygate apikey: the key is shown only now; store it safely", file=sys.stderr)
        elif args.action == "revoke":
            revoked_at = await store.revoke(args.key_id)
            if revoked_at is None:
                print(f"paygate apikey: no key with id {args.key_id!r}", file=sys.stderr)
                return EXIT_ERROR
            print(json.dumps({"keyId": args.key_id, "revokedAt": revoked_at.isoformat()}))
        else:
            for info in await store.list_keys(args.client):
                print(_info_json(info))
    finally:
        await db.close()
    return EXIT_OK


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    settings = load_settings("paygate apikey")
    use_event_loop(settings.event_loop)
    try:
        return asyncio.run(run_apikey_command(settings, args))
    except ValueError as exc:  # a label the store refuses
        print(f"paygate apikey: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
