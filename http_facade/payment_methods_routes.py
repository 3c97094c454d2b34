"""``/v1/payment_methods``: tokenize an account first, pay with the token later.

A REST client (or an upstream service that then publishes on Kafka) posts the number once
and gets a token (``pm_...``) it can pay with, by REST (``{"token": "pm_..."}`` as an
account) or in a Kafka command (``token``, with the client's ``clientId``). Tokens are the
client's own: another client's token is 404 like a missing one. ``DELETE`` crypto-shreds
the number: nothing can bring it back.

``GET /v1/payment_methods/encryption_key`` (public) publishes paygate's public key, for
producers that encrypt a number into a Kafka command instead (docs/security.md).
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from domain.errors import ErrorCode, PaygateError
from domain.vaulted import VaultedAccount, is_token, payment_method_not_found
from http_facade.payments_routes import require_json
from http_facade.requests import parse_payment_method_body
from http_facade.state import CLIENT_ID, ENCRYPTION_KEY, TOKEN_RETENTION, VAULT

PAYMENT_METHODS_PATH: Final = "/v1/payment_methods"
PAYMENT_METHOD_PATH: Final = "/v1/payment_methods/{token}"
ENCRYPTION_KEY_PATH: Final = "/v1/payment_methods/encryption_key"


def add_payment_method_routes(app: web.Application) -> None:
    app.router.add_post(PAYMENT_METHODS_PATH, create_payment_method)
    # Before the {token} route, which would otherwise match it.
    app.router.add_get(ENCRYPTION_KEY_PATH, encryption_key)
    app.router.add_get(PAYMENT_METHOD_PATH, get_payment_method)
    app.router.add_delete(PAYMENT_METHOD_PATH, delete_payment_method)


def payment_method_body(vaulted: VaultedAccount, *, saved: bool | None = None) -> dict[str, object]:
    body: dict[str, object] = {
        "token": vaulted.token,
        "type": vaulted.type.value,
        "masked": vaulted.masked,
        "holderName": vaulted.holder_name,
    }
    if saved is not None:
        body["saved"] = saved
    return body


async def create_payment_method(request: web.Request) -> web.Response:
    """``POST /v1/payment_methods``: vault an account; 201 with its token.

    ``saved: true`` keeps it until deleted; otherwise it is shredded after the retention
    (``PAYGATE_VAULT_TOKEN_RETENTION_DAYS``).
    """
    require_json(request)
    body = parse_payment_method_body(await request.read())
    vaulted = await request.app[VAULT].tokenize(
        body.to_account(),
        client_id=request[CLIENT_ID],
        saved=body.saved,
        expires_in=None if body.saved else request.app[TOKEN_RETENTION],
    )
    return web.json_response(
        payment_method_body(vaulted, saved=body.saved),
        status=201,
        headers={"Location": f"{PAYMENT_METHODS_PATH}/{vaulted.token}"},
    )


def token_in_path(request: web.Request) -> str:
    """The ``{token}`` of the path; 404 unless it is shaped like a token. Whatever else a
    client put there (perhaps a card number) is neither looked up nor echoed."""
    token = request.match_info["token"]
    if not is_token(token):
        raise payment_method_not_found()
    return token


async def get_payment_method(request: web.Request) -> web.Response:
    """``GET /v1/payment_methods/{token}``: the masked account; 404 unless the client's."""
    token = token_in_path(request)
    vaulted = await request.app[VAULT].describe(token, client_id=request[CLIENT_ID])
    return web.json_response(payment_method_body(vaulted))


async def delete_payment_method(request: web.Request) -> web.Response:
    """``DELETE /v1/payment_methods/{token}``: crypto-shred it; 204, or 404 unless the
    client's. Payments made with it keep their masked number; one still in flight that
    needs the number again fails ``payment_method_not_found`` without reaching a provider.
    """
    token = token_in_path(request)
    if not await request.app[VAULT].delete(token, client_id=request[CLIENT_ID]):
        raise PaygateError(ErrorCode.PAYMENT_METHOD_NOT_FOUND, "no payment method with this token")
    return web.Response(status=204)


async def encryption_key(request: web.Request) -> web.Response:
    """``GET /v1/payment_methods/encryption_key`` (public): paygate's current public key."""
    published = request.app[ENCRYPTION_KEY]
    if published is None:
        raise PaygateError(ErrorCode.NOT_FOUND, "this facade publishes no encryption key")
    key_id, algorithm, pem = published
    return web.json_response({"keyId": key_id, "algorithm": algorithm, "publicKey": pem})
