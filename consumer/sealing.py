"""Seals a payment command into its open attempt, so whoever owns the attempt next can
re-send it with the same key.

The store never holds an account number in clear, yet an attempt the provider never
received can only be re-sent with the payer's and payee's numbers. So the command travels
with its attempt sealed: AES-256-GCM under a key derived (HKDF-SHA256) from the account
fingerprint key, with a fresh nonce per seal and the payment id as associated data, so a
sealed command opens only for the payment it was sealed for. The attempt drops it as soon
as the attempt is closed (see persistence.payment_store).

Since the vault, a sealed command holds no number at all: its accounts are vault tokens
(with their masked numbers and fingerprints), revealed again only for the re-sent call, so
the vault stays the one place numbers live and deleting a token shreds the sealed copy's
number too. Seals made before the vault (with ``number``) still open.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from domain.accounts import Account, AccountType
from domain.money import Money
from domain.payments import CreatePayment, PaymentMethod
from domain.vaulted import AnyAccount, VaultedAccount

log = logging.getLogger("paygate.consumer")

_VERSION: Final = b"\x01"
_NONCE_BYTES: Final = 12


class CommandSealer:
    def __init__(self, account_key: bytes) -> None:
        key = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=None,
            info=b"paygate attempt sealing v1",
        ).derive(account_key)
        self._aead = AESGCM(key)

    def seal(self, command: CreatePayment) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        plain = json.dumps(_fields(command), separators=(",", ":")).encode()
        aad = command.payment_request_id.encode()
        return _VERSION + nonce + self._aead.encrypt(nonce, plain, aad)

    def unseal(self, sealed: bytes, payment_id: str) -> CreatePayment | None:
        """The command sealed for ``payment_id``, or None (logged) if it does not open."""
        if sealed[:1] != _VERSION:
            log.error(
                "sealed command of an unknown version", extra={"payment_request_id": payment_id}
            )
            return None
        nonce, body = sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :]
        try:
            plain = self._aead.decrypt(nonce, body, payment_id.encode())
        except InvalidTag:
            log.error(
                "sealed command does not open (another key, or altered)",
                extra={"payment_request_id": payment_id},
            )
            return None
        command = _command(json.loads(plain))
        if command.payment_request_id != payment_id:
            return None
        return command


def _account(account: AnyAccount) -> dict[str, Any]:
    if isinstance(account, VaultedAccount):
        return {
            "type": account.type.value,
            "token": account.token,
            "masked": account.masked,
            "fingerprint": account.fingerprint,
            "holder": account.holder_name,
        }
    if isinstance(account, Account):
        return {
            "type": account.type.value,
            "number": account.number,
            "holder": account.holder_name,
        }
    raise TypeError(f"a {type(account).__name__} is vaulted before it is sealed")


def _fields(command: CreatePayment) -> dict[str, Any]:
    return {
        "idempotencyKey": command.idempotency_key,
        "userId": command.user_id,
        "orderId": command.order_id,
        "amount": command.amount.minor_units,
        "currency": command.amount.currency,
        "paymentMethod": command.payment_method.value,
        "payer": _account(command.payer),
        "payee": _account(command.payee),
        "requestedAt": command.requested_at.isoformat(),
        "metadata": dict(command.metadata),
        "newAttempt": command.new_attempt,
        "generation": command.generation,
        "clientId": command.client_id,
        "capture": command.capture,
    }


def _command(fields: dict[str, Any]) -> CreatePayment:
    def account(raw: dict[str, Any]) -> Account | VaultedAccount:
        if "token" in raw:
            return VaultedAccount(
                AccountType(raw["type"]),
                raw["token"],
                raw["masked"],
                raw["fingerprint"],
                raw["holder"],
            )
        return Account(AccountType(raw["type"]), raw["number"], raw["holder"])

    return CreatePayment(
        idempotency_key=fields["idempotencyKey"],
        user_id=fields["userId"],
        order_id=fields["orderId"],
        amount=Money(fields["amount"], fields["currency"]),
        payment_method=PaymentMethod(fields["paymentMethod"]),
        payer=account(fields["payer"]),
        payee=account(fields["payee"]),
        requested_at=datetime.fromisoformat(fields["requestedAt"]),
        metadata=fields["metadata"],
        new_attempt=fields["newAttempt"],
        generation=fields["generation"],
        client_id=fields["clientId"],
        capture=fields["capture"],
    )
