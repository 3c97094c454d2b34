"""Accounts kept in the vault, named by a token, and the rules for tokens.

A :class:`VaultedAccount` is what every part of paygate but the vault and the provider
call handles: the token (``pm_`` and 24 random characters), the masked number and its
keyed fingerprint. It holds no account number, so it may be logged, stored and published.
The number is read back from the vault (``vault.Vault.reveal``) only for a provider call.

Tokens are scoped to their API client (``client_id``; ``None`` is the scope of upstream
services on Kafka): another client's token is unknown, exactly like a missing one.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Final

from domain.accounts import Account, AccountRef, AccountType
from domain.errors import ErrorCode, PaygateError
from domain.text import check_characters

TOKEN_PREFIX: Final = "pm_"  # noqa: S105 - a prefix, not a secret
_TOKEN_ALPHABET: Final = "0123456789abcdefghijklmnopqrstuvwxyz"  # noqa: S105
_TOKEN_LENGTH: Final = 24  # 24 of 36 symbols: 124 bits, unguessable
_TOKEN: Final = re.compile(r"\Apm_[0-9a-z]{24}\Z")


_TOKEN_SPACE: Final = len(_TOKEN_ALPHABET) ** _TOKEN_LENGTH


def new_token() -> str:
    """A new token, its 24 symbols independent and uniform (one draw from the OS's CSPRNG).

    One ``randbelow`` over all 36^24 tokens, written in base 36, has the same distribution
    as 24 ``secrets.choice`` calls, at one read of the OS's random source instead of
    24: profiled, those reads were 45 % of a tokenization and 7 % of the consumer's loop.
    """
    value = secrets.randbelow(_TOKEN_SPACE)
    symbols = []
    for _ in range(_TOKEN_LENGTH):
        value, digit = divmod(value, len(_TOKEN_ALPHABET))
        symbols.append(_TOKEN_ALPHABET[digit])
    return TOKEN_PREFIX + "".join(symbols)


def is_token(value: object) -> bool:
    return isinstance(value, str) and _TOKEN.match(value) is not None


def check_token(value: object, *, param: str) -> str:
    """``value`` if it is shaped like a vault token; else ``payment_method_not_found``.

    Not ``invalid_request``: a malformed token names no payment method, exactly like a
    deleted one, and the message never echoes it.
    """
    check_characters(value, param)
    if not is_token(value):
        raise PaygateError(
            ErrorCode.PAYMENT_METHOD_NOT_FOUND, "no payment method with this token", param=param
        )
    assert isinstance(value, str)
    return value


def payment_method_not_found(param: str | None = None) -> PaygateError:
    return PaygateError(
        ErrorCode.PAYMENT_METHOD_NOT_FOUND, "no payment method with this token", param=param
    )


@dataclass(frozen=True, slots=True)
class VaultedAccount:
    """An account whose number is in the vault under ``token``. Safe to log and store."""

    type: AccountType
    token: str
    masked: str
    fingerprint: str
    holder_name: str | None = None

    def ref(self, fingerprint_key: bytes) -> AccountRef:
        """The stored reference; the fingerprint was made with the same key at tokenization."""
        del fingerprint_key
        return AccountRef(self.type, self.masked, self.fingerprint)

    def __str__(self) -> str:
        return f"{self.type.value} {self.masked}"


@dataclass(frozen=True, slots=True)
class AccountToken:
    """A token as a command names it, not yet looked up in the vault (the consumer's
    intake turns it into a :class:`VaultedAccount`, or refuses the command)."""

    type: AccountType
    token: str
    holder_name: str | None = None

    def ref(self, fingerprint_key: bytes) -> AccountRef:
        raise TypeError("an account token is looked up in the vault before it is used")

    def __str__(self) -> str:
        return f"{self.type.value} token"


@dataclass(frozen=True, slots=True)
class EncryptedAccount:
    """An account number encrypted to paygate's public key by a producer that holds no
    secret (producer/account_encryption.py); the consumer's intake decrypts and vaults it."""

    type: AccountType
    key_id: str
    wrapped_key: bytes = field(repr=False)
    nonce: bytes = field(repr=False)
    ciphertext: bytes = field(repr=False)
    holder_name: str | None = None

    def ref(self, fingerprint_key: bytes) -> AccountRef:
        raise TypeError("an encrypted account is decrypted and vaulted before it is used")

    def __str__(self) -> str:
        return f"{self.type.value} encrypted"


# What a command may name an account with. Clear ``Account``s and the two intake forms
# exist only between an intake and the vault; handlers see ``VaultedAccount``s.
AnyAccount = Account | VaultedAccount | AccountToken | EncryptedAccount
