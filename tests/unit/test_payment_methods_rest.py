"""``/v1/payment_methods`` and paying with tokens by REST: the facade publishes tokens only,
tokens are the client's own, and a broken or deleted one is refused before publishing."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from domain.accounts import Account, AccountType
from domain.payments import CreatePayment
from domain.status import PaymentStatus
from domain.vaulted import VaultedAccount
from producer.account_encryption import encrypt_account_number, public_key_id
from schemas.payments import PaymentMessages
from tests.support.builders import PAYEE_IBAN, SUCCESS_CARD
from tests.support.facade_world import ACCOUNT_KEY, KEY_1, KEY_2, World, payment_body, world_client

pytestmark = pytest.mark.unit

CLIENT_1 = {"Authorization": f"Bearer {KEY_1}"}
CLIENT_2 = {"Authorization": f"Bearer {KEY_2}"}


@pytest.fixture
async def world() -> World:
    return World()


@pytest.fixture
async def client(world: World) -> AsyncIterator[TestClient[Any, Any]]:
    client = await world_client(world, encryption_key=("ak_test", "RSA-OAEP-256+A256GCM", "PEM"))
    yield client
    await client.close()


def published(world: World) -> CreatePayment:
    [command] = [c for c in world.published if isinstance(c, CreatePayment)]
    return command


async def tokenize(client: TestClient[Any, Any], **body: Any) -> dict[str, Any]:
    answer = await client.post(
        "/v1/payment_methods",
        json={"type": "card", "number": SUCCESS_CARD, **body},
        headers=CLIENT_1,
    )
    assert answer.status == 201, await answer.text()
    body = dict(await answer.json())
    assert answer.headers["Location"] == f"/v1/payment_methods/{body['token']}"
    return body


async def test_tokenize_read_delete(client: TestClient[Any, Any], world: World) -> None:
    made = await tokenize(client, holderName="Ada", saved=True)
    assert made == {
        "token": made["token"],
        "type": "card",
        "masked": "****4242",
        "holderName": "Ada",
        "saved": True,
    }
    assert SUCCESS_CARD not in str(made)
    path = f"/v1/payment_methods/{made['token']}"
    read = await client.get(path, headers=CLIENT_1)
    assert (read.status, (await read.json())["masked"]) == (200, "****4242")
    # Another client's token is not found, exactly like a missing one.
    assert (await client.get(path, headers=CLIENT_2)).status == 404
    assert (await client.delete(path, headers=CLIENT_2)).status == 404
    assert (await client.delete(path, headers=CLIENT_1)).status == 204
    assert world.vault_rows.entries == {}
    gone = await client.get(path, headers=CLIENT_1)
    assert (gone.status, (await gone.json())["error"]["code"]) == (
        404,
        "payment_method_not_found",
    )
    malformed = await client.get("/v1/payment_methods/pm_4242424242424242", headers=CLIENT_1)
    assert malformed.status == 404
    # Whatever a path holds that is no token, a control character included, is not found.
    for path in ("/v1/payment_methods/%C2%84", f"/v1/payment_methods/{SUCCESS_CARD}"):
        assert (await client.get(path, headers=CLIENT_1)).status == 404
        assert (await client.delete(path, headers=CLIENT_1)).status == 404


async def test_a_token_not_saved_expires_with_the_retention(
    client: TestClient[Any, Any], world: World
) -> None:
    made = await tokenize(client)
    [entry] = world.vault_rows.entries.values()
    assert entry.token == made["token"]
    assert entry.expires_at is not None
    assert not entry.saved


async def test_paying_with_a_number_publishes_a_token(
    client: TestClient[Any, Any], world: World
) -> None:
    answer = await client.post("/v1/payments", json=payment_body(), headers=CLIENT_1)
    assert answer.status == 202
    command = published(world)
    assert isinstance(command.payer, VaultedAccount)
    assert isinstance(command.payee, VaultedAccount)
    assert command.payee.ref(b"") == Account(AccountType.IBAN, PAYEE_IBAN).ref(ACCOUNT_KEY)
    # What goes on the bus: the bytes hold tokens, not numbers.
    data = PaymentMessages.bundled().encode_command(command)
    assert SUCCESS_CARD.encode() not in data
    assert PAYEE_IBAN.encode() not in data
    assert command.payer.token.encode() in data


async def test_paying_with_a_token(client: TestClient[Any, Any], world: World) -> None:
    made = await tokenize(client)
    body = payment_body(payerAccount={"token": made["token"]})
    assert (await client.post("/v1/payments", json=body, headers=CLIENT_1)).status == 202
    command = published(world)
    assert isinstance(command.payer, VaultedAccount)
    assert command.payer.token == made["token"]
    # Same card by number or by token: the same parameters, so the same key replays.
    world.settle_payment(command, PaymentStatus.SUCCEEDED)
    by_number = await client.post(
        "/v1/payments",
        json=payment_body(payerAccount={"type": "card", "number": SUCCESS_CARD}),
        headers={**CLIENT_1, "Idempotency-Key": command.idempotency_key},
    )
    assert (by_number.status, by_number.headers["Idempotent-Replayed"]) == (200, "true")


async def test_another_clients_or_a_deleted_token_is_refused_before_publishing(
    client: TestClient[Any, Any], world: World
) -> None:
    made = await tokenize(client)
    body = payment_body(payerAccount={"token": made["token"]})
    answer = await client.post("/v1/payments", json=body, headers=CLIENT_2)
    assert (answer.status, (await answer.json())["error"]["code"]) == (
        404,
        "payment_method_not_found",
    )
    await client.delete(f"/v1/payment_methods/{made['token']}", headers=CLIENT_1)
    answer = await client.post("/v1/payments", json=body, headers=CLIENT_1)
    assert answer.status == 404
    assert world.published == []


async def test_a_shredded_clients_cards_are_refused_with_a_stable_code(
    client: TestClient[Any, Any], world: World
) -> None:
    # Its API key still accepted (a facade's login cache keeps a revoked key for seconds):
    # whatever it sends to be stored is refused, and nothing is stored or published.
    await tokenize(client, saved=True)
    assert await world.vault_rows.delete_client("client-1", datetime.now(UTC)) == 1
    saving = await client.post(
        "/v1/payment_methods",
        json={"type": "card", "number": SUCCESS_CARD, "saved": True},
        headers=CLIENT_1,
    )
    paying = await client.post("/v1/payments", json=payment_body(), headers=CLIENT_1)
    for answer in (saving, paying):
        error = (await answer.json())["error"]
        assert (answer.status, error["code"], error["retryable"]) == (
            403,
            "client_shredded",
            False,
        )
        assert SUCCESS_CARD[-4:] not in error["message"]
    assert world.vault_rows.entries == {}
    assert world.published == []
    # Another client is served as before.
    other = await client.post("/v1/payments", json=payment_body(), headers=CLIENT_2)
    assert other.status == 202


async def test_a_tampered_token_is_422_and_nothing_is_published(
    client: TestClient[Any, Any], world: World
) -> None:
    made = await tokenize(client)
    entry = world.vault_rows.entries[made["token"]]
    world.vault_rows.entries[made["token"]] = dataclasses.replace(
        entry, ciphertext=entry.ciphertext[:-1] + bytes([entry.ciphertext[-1] ^ 1])
    )
    body = payment_body(payerAccount={"token": made["token"]})
    answer = await client.post("/v1/payments", json=body, headers=CLIENT_1)
    assert (answer.status, (await answer.json())["error"]["code"]) == (
        422,
        "account_data_tampered",
    )
    assert world.published == []


@pytest.mark.parametrize(
    ("account", "param"),
    [
        ({"type": "card"}, "payerAccount"),
        ({"type": "card", "number": SUCCESS_CARD, "token": "pm_" + "a" * 24}, "payerAccount"),
        ({"number": SUCCESS_CARD}, "payerAccount.type"),
        ({"token": "pm_short"}, "payerAccount.token"),
    ],
)
async def test_an_account_is_a_number_or_a_token(
    client: TestClient[Any, Any], world: World, account: dict[str, Any], param: str
) -> None:
    answer = await client.post(
        "/v1/payments", json=payment_body(payerAccount=account), headers=CLIENT_1
    )
    assert answer.status in (400, 404)
    body = await answer.json()
    assert body["error"]["param"] == param
    assert SUCCESS_CARD not in str(body)
    assert world.published == []
    assert world.vault_rows.entries == {}


async def test_the_public_key_is_public(client: TestClient[Any, Any]) -> None:
    answer = await client.get("/v1/payment_methods/encryption_key")
    assert answer.status == 200
    assert await answer.json() == {
        "keyId": "ak_test",
        "algorithm": "RSA-OAEP-256+A256GCM",
        "publicKey": "PEM",
    }


def test_the_producer_helper_and_paygate_agree_on_the_key_id(tmp_path: Any) -> None:
    from vault.account_key_pair import AccountKeyPair

    pair = AccountKeyPair.from_files([tmp_path / "k.pem"], generate_missing=True)
    pem = pair.published.public_key_pem.encode()
    assert public_key_id(pem) == pair.published.key_id
    encrypted = encrypt_account_number(pem, "card", SUCCESS_CARD)
    assert SUCCESS_CARD.encode() not in b"".join(
        v for v in encrypted.values() if isinstance(v, bytes)
    )
