"""A dead letter whose client scope the vault cannot store is still written, on SQLite and
PostgreSQL: the redaction must not tokenize its numbers under that scope.

A CreatePayment dead-lettered for its ``clientId`` (too long, or a NUL in it) that also
carries clear numbers reached the vault with that client id. PostgreSQL refuses it
(``vault_entries.client_id`` is 64 characters; text cannot hold a NUL), the redaction
raised, and the router retries a dead letter until it is written: the partition stopped
for good behind one message. Such a command can never be processed (its scope is refused),
so its numbers are masked in place instead, as for any other command that cannot be.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.dead_letter_redaction import DeadLetterRedaction
from domain.errors import PaygateError
from persistence.group_commit import GroupCommit
from schemas.codec import CREATE_PAYMENT, AvroCodec
from schemas.payments import PaymentMessages
from schemas.registry import FileSchemaRegistry
from tests.support.builders import ACCOUNT_KEY, PAYEE_IBAN, SUCCESS_CARD, create_payment_record
from tests.support.vault_keys import KEK_1
from vault.kek import LocalKeyEncryptionKeys
from vault.rows import VaultRows
from vault.vault import Vault

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()
CODEC = AvroCodec(FileSchemaRegistry.bundled())


@pytest.mark.parametrize("client_id", ["c" * 65, "acme\x00"], ids=["too-long", "nul"])
async def test_a_dead_letter_whose_scope_cannot_be_stored_is_masked(
    engine: AsyncEngine, client_id: str
) -> None:
    vault = Vault(
        VaultRows(engine, GroupCommit(engine)),
        LocalKeyEncryptionKeys.from_text(KEK_1),
        ACCOUNT_KEY,
    )
    redact = DeadLetterRedaction(MESSAGES, vault, retention=timedelta(days=1))
    value = CODEC.encode(CREATE_PAYMENT, create_payment_record(clientId=client_id))
    with pytest.raises(PaygateError):
        MESSAGES.decode_any_command(value)  # it is dead-lettered for its clientId
    redacted = await redact(value)
    assert len(redacted) == len(value)
    assert SUCCESS_CARD.encode() not in redacted
    assert PAYEE_IBAN.encode() not in redacted
