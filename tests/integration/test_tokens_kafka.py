"""Tokens on a real broker: commands that name accounts by token or by a number encrypted
to paygate's key are charged; every broken one is dead-lettered with its catalogue code and
never reaches the provider; clear numbers are refused outside development and never reach
the dead-letter topic."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from sqlalchemy import update

from consumer.dead_letters import HEADER_ERROR_CODE
from domain.accounts import Account, AccountType
from domain.status import PaymentStatus
from domain.vaulted import EncryptedAccount
from paygate.settings import Settings
from paygate.vault_wiring import account_key_pair, open_vault
from persistence.engine import create_engine
from persistence.migrate import create_schema
from persistence.vault_tables import vault_entries
from producer.account_encryption import encrypt_account_number
from providers.port import ChargeOutcome, ChargeRequest
from providers.sandbox import InProcessSandboxProvider
from schemas.payments import PaymentMessages
from tests.support.builders import PAYEE_IBAN, SUCCESS_CARD, create_payment
from tests.support.clear_numbers import numbers_in
from tests.support.consumer_run import running_consumer
from tests.support.kafka_io import produce, read_until
from tests.support.vault_keys import KEK_2
from vault.kek import LocalKeyEncryptionKeys
from vault.rows import VaultRows
from vault.vault import Vault

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()
CARD = Account(AccountType.CARD, SUCCESS_CARD)
IBAN = Account(AccountType.IBAN, PAYEE_IBAN)


class RecordingSandbox(InProcessSandboxProvider):
    """The sandbox, remembering which payments reached it."""

    def __init__(self) -> None:
        super().__init__()
        self.charged: list[str] = []

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        self.charged.append(request.payment_request_id)
        return await super().charge(request)


def encrypted_with(settings: Settings, account: Account) -> EncryptedAccount:
    pem = account_key_pair(settings).published.public_key_pem.encode()
    record: dict[str, Any] = encrypt_account_number(pem, account.type.value, account.number)
    return EncryptedAccount(
        account.type,
        record["keyId"],
        record["wrappedKey"],
        record["nonce"],
        record["ciphertext"],
    )


async def test_tokens_and_encrypted_numbers_on_kafka(topics: Settings) -> None:
    settings = topics.model_copy(update={"accept_clear_account_numbers": False})
    bootstrap = settings.kafka_bootstrap_servers
    assert bootstrap
    engine = create_engine(settings.database_url)
    await create_schema(engine)
    rows = VaultRows(engine)
    # Older data keys first: one wrapped by a key-encryption key the consumer does not
    # hold, one by a key under the consumer's KEK id that is not its key. The consumer's
    # own (newest) key is made last, so it is the one new values use.
    foreign = Vault(rows, LocalKeyEncryptionKeys.from_text(KEK_2), settings.account_key)
    unknown_key = await foreign.tokenize(CARD, client_id=None)
    kek_id = settings.vault_kek.get_secret_value().split(":", 1)[0]
    impostor = Vault(
        rows, LocalKeyEncryptionKeys.from_text(f"{kek_id}:{'44' * 32}"), settings.account_key
    )
    await impostor.rotate()
    wrong_key = await impostor.tokenize(CARD, client_id=None)
    opened = await open_vault(settings, engine)
    vault = opened.vault
    await vault.rotate()
    payer, payee = (
        await vault.tokenize(CARD, client_id=None),
        await vault.tokenize(IBAN, client_id=None),
    )
    tampered = await vault.tokenize(CARD, client_id=None)
    async with engine.begin() as conn:
        row = (
            await conn.execute(
                vault_entries.select().where(vault_entries.c.token == tampered.token)
            )
        ).one()
        await conn.execute(
            update(vault_entries)
            .where(vault_entries.c.token == tampered.token)
            .values(ciphertext=row.ciphertext[:-1] + bytes([row.ciphertext[-1] ^ 1]))
        )
    deleted = await vault.tokenize(CARD, client_id=None)
    await vault.delete(deleted.token, client_id=None)

    good_token = dataclasses.replace(create_payment(), payer=payer, payee=payee)
    good_encrypted = dataclasses.replace(
        create_payment(), payer=encrypted_with(settings, CARD), payee=payee
    )
    broken_encrypted = encrypted_with(settings, CARD)
    poison = {
        "account_data_tampered": dataclasses.replace(good_token, payer=tampered, order_id="o-t"),
        "encryption_key_unknown": dataclasses.replace(
            good_token, payer=unknown_key, order_id="o-u"
        ),
        "encryption_key_mismatch": dataclasses.replace(good_token, payer=wrong_key, order_id="o-m"),
        "payment_method_not_found": dataclasses.replace(good_token, payer=deleted, order_id="o-d"),
        "invalid_request": dataclasses.replace(good_token, payer=CARD, order_id="o-c"),
        # The producer's ciphertext altered on the way.
        "account_data_tampered ": dataclasses.replace(
            good_token,
            order_id="o-e",
            payer=dataclasses.replace(
                broken_encrypted, ciphertext=broken_encrypted.ciphertext[:-1] + b"\x00"
            ),
        ),
    }
    await produce(
        bootstrap,
        settings.commands_topic,
        [(c.order_id.encode(), MESSAGES.encode_command(c)) for c in poison.values()]
        + [(c.order_id.encode(), MESSAGES.encode_command(c)) for c in (good_token, good_encrypted)],
    )
    provider = RecordingSandbox()
    try:
        async with running_consumer(settings, provider):
            dead = await read_until(
                bootstrap, settings.dlq_topic, lambda rs: len(rs) >= len(poison)
            )
            results = await read_until(bootstrap, settings.results_topic, lambda rs: len(rs) >= 2)
    finally:
        await opened.close()
        await engine.dispose()

    codes = sorted(dict(r.headers)[HEADER_ERROR_CODE].decode() for r in dead)
    assert codes == sorted(code.strip() for code in poison)
    for record in dead:
        assert numbers_in(record.value) == []
        assert numbers_in(b"".join(v for _, v in record.headers)) == []
    events = [MESSAGES.decode_result(r.value) for r in results]
    assert {e.payment_request_id: e.status for e in events} == {
        good_token.payment_request_id: PaymentStatus.SUCCEEDED,
        good_encrypted.payment_request_id: PaymentStatus.SUCCEEDED,
    }
    # Only the good ones ever reached the provider.
    assert sorted(provider.charged) == sorted(
        [good_token.payment_request_id, good_encrypted.payment_request_id]
    )
