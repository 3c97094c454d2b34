"""``paygate keys``: the vault's data keys.

    paygate keys list            every data key, its wrapping key and how many values (and
                                 webhook signing secrets) it holds
    paygate keys rotate          a new data key; new values are encrypted under it
    paygate keys rewrap          data keys under the current key-encryption key, and every
                                 value and webhook signing secret under the newest data key
                                 (safe while paygate runs)
    paygate keys retire KEY_ID   destroy a data key no value or webhook secret uses any more
    paygate keys expire          crypto-shred every token past its retention, once (the
                                 consumer's housekeeping does it periodically)
    paygate keys shred-client --client ID
                                 crypto-shred every token of a client (a client that leaves);
                                 from then on no token of the client is stored
    paygate keys unshred-client --client ID
                                 let tokens of a shredded client be stored again (a client
                                 reinstated on purpose)
    paygate keys unseal-webhook-secrets
                                 write webhook signing secrets back in clear, only to
                                 downgrade below revision 0017, with paygate stopped

Against the vault's database (``PAYGATE_VAULT_DATABASE_URL``, else ``PAYGATE_DATABASE_URL``),
paygate's database (``PAYGATE_DATABASE_URL``: the webhook endpoints' secrets) and the
key-encryption keys (``PAYGATE_VAULT_KEK_FILE`` or ``PAYGATE_VAULT_KEK``); production
refuses the development key-encryption key. Results go to stdout as JSON (one object per
line for ``list``), diagnostics to stderr. Exit codes: 0 done; 1 ``rewrap`` left values or
webhook secrets it could not open, ``retire`` refused (the key is in use or the newest),
or ``unseal-webhook-secrets`` left some it could not open; 2 bad arguments, an unknown
key id, or a vault database of its own without ``PAYGATE_DATABASE_URL`` naming paygate's
(an existing one: the secrets of a database made up on the spot are none). The rotation
procedure is in docs/security.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from domain.errors import PaygateError
from paygate.database import engine_for
from paygate.event_loop import use_event_loop
from paygate.production_checks import Uses, refuse_unsafe_settings
from paygate.settings import Settings
from paygate.vault_wiring import open_vault
from persistence.api_key_store import check_client_id
from persistence.group_commit import GroupCommit
from persistence.migrate import create_schema, current_revision
from persistence.webhook_secrets import WebhookSecrets
from vault.kek import KeyFormatError
from vault.vault import DataKeyInfo, KeyInUseError, NoSuchKeyError

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_ERROR = 2


_NO_PAYGATE_DATABASE = (
    "paygate keys: PAYGATE_DATABASE_URL must name paygate's database (it holds the webhook "
    "endpoints' signing secrets, encrypted under the data keys), not only "
    "PAYGATE_VAULT_DATABASE_URL the vault's"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paygate keys", description="the vault's data keys")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="list data keys (never the keys themselves)")
    sub.add_parser("rotate", help="add a data key; new values use it")
    sub.add_parser("rewrap", help="move keys and values to the newest keys")
    retire = sub.add_parser("retire", help="destroy a data key no value uses")
    retire.add_argument("key_id", help="the data key's id, as `list` shows it")
    sub.add_parser("expire", help="shred tokens past their retention, once")
    shred = sub.add_parser("shred-client", help="shred every token of a client")
    shred.add_argument("--client", required=True, type=_client_id, help="the client's id")
    unshred = sub.add_parser(
        "unshred-client", help="let a shredded client's tokens be stored again"
    )
    unshred.add_argument("--client", required=True, type=_client_id, help="the client's id")
    sub.add_parser(
        "unseal-webhook-secrets", help="webhook secrets back in clear, to downgrade below 0017"
    )
    return parser


def _client_id(text: str) -> str:
    try:
        return check_client_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def key_json(info: DataKeyInfo, webhook_secrets: int | None = None) -> str:
    """``webhook_secrets``: how many endpoints' signing secrets the key encrypts (listed by
    ``list``; the vault's own count, ``values``, does not include them)."""
    fields: dict[str, object] = {
        "keyId": info.key_id,
        "kekId": info.kek_id,
        "createdAt": info.created_at.isoformat(),
        "retiredAt": info.retired_at.isoformat() if info.retired_at else None,
        "active": info.active,
        "values": info.values,
    }
    if webhook_secrets is not None:
        fields["webhookSecrets"] = webhook_secrets
    return json.dumps(fields)


def _paygate_database_unnamed(settings: Settings) -> bool:
    """Whether the vault has a database of its own and paygate's is not named: the default
    URL then is a SQLite file in the working directory, not paygate's database."""
    return settings.vault_database_url is not None and "database_url" not in (
        settings.model_fields_set
    )


async def run_keys_command(settings: Settings, args: argparse.Namespace) -> int:
    # The webhook endpoints' secrets are under the data keys too: checked in a database that
    # is not paygate's, none is under any key, and retire would erase keys still in use.
    if _paygate_database_unnamed(settings):
        print(_NO_PAYGATE_DATABASE, file=sys.stderr)
        return EXIT_ERROR
    engine = engine_for(settings)
    try:
        if settings.vault_database_url is not None and await current_revision(engine) is None:
            print(_NO_PAYGATE_DATABASE, file=sys.stderr)  # an empty database: a wrong URL
            return EXIT_ERROR
        await create_schema(engine)
        opened = await open_vault(settings, engine)
        try:
            vault = opened.vault
            secrets = WebhookSecrets(engine, GroupCommit(engine), vault)
            if args.action == "list":
                for info in await vault.keys():
                    print(key_json(info, await secrets.count_under(info.key_id)))
            elif args.action == "rotate":
                print(key_json(await vault.rotate()))
            elif args.action == "expire":
                print(json.dumps({"shredded": await vault.delete_expired()}))
            elif args.action == "shred-client":
                shredded = await vault.delete_client(args.client)
                print(json.dumps({"clientId": args.client, "shredded": shredded}))
            elif args.action == "unshred-client":
                reopened = await vault.unshred_client(args.client)
                print(json.dumps({"clientId": args.client, "unshredded": reopened}))
            elif args.action == "unseal-webhook-secrets":
                unsealed, failed = await secrets.unseal_all()
                print(json.dumps({"webhookSecretsUnsealed": unsealed, "failed": failed}))
                if failed:
                    print(
                        "paygate keys: some webhook secrets do not open; a downgrade below "
                        "0017 stays refused while they are only encrypted",
                        file=sys.stderr,
                    )
                    return EXIT_REFUSED
            elif args.action == "rewrap":
                report = await vault.rewrap()
                webhook = await secrets.rewrap()
                print(
                    json.dumps(
                        {
                            "keysRewrapped": report.keys_rewrapped,
                            "valuesMoved": report.values_moved,
                            "valuesFailed": report.values_failed,
                            "webhookSecretsSealed": webhook.sealed,
                            "webhookSecretsMoved": webhook.moved,
                            "webhookSecretsFailed": webhook.failed,
                        }
                    )
                )
                if report.values_failed or webhook.failed:
                    print(
                        "paygate keys: some values do not open (see docs/security.md); "
                        "their keys cannot be retired",
                        file=sys.stderr,
                    )
                    return EXIT_REFUSED
            else:
                # Said first, for the operator; the guard is the retire's own count, made
                # after it locks the key's row (vault.rows.VaultRows.retire_key), which a
                # secret's write under way holds: this one cannot see a write in flight. With
                # a vault database of its own, this count is all there is (docs/security.md).
                in_use = await secrets.count_under(args.key_id)
                if in_use:
                    print(
                        f"paygate keys: {in_use} webhook signing secret(s) are still encrypted "
                        f"under {args.key_id}: run rewrap first",
                        file=sys.stderr,
                    )
                    return EXIT_REFUSED
                try:
                    print(key_json(await vault.retire(args.key_id)))
                except NoSuchKeyError:
                    print(f"paygate keys: no data key with id {args.key_id!r}", file=sys.stderr)
                    return EXIT_ERROR
                except KeyInUseError as exc:
                    print(f"paygate keys: {exc}", file=sys.stderr)
                    return EXIT_REFUSED
        finally:
            await opened.close()
    finally:
        await engine.dispose()
    return EXIT_OK


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    settings = Settings()
    refuse_unsafe_settings("paygate keys", settings, Uses.VAULT)
    use_event_loop(settings.event_loop)
    try:
        return asyncio.run(run_keys_command(settings, args))
    except (KeyFormatError, OSError) as exc:
        print(f"paygate keys: the key-encryption keys: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except PaygateError as exc:  # a key-encryption key that does not open a data key
        print(f"paygate keys: {exc.code.value}: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
