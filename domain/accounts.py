"""Payer and payee accounts, and how their numbers are kept out of sight.

A clear account number lives only in memory, on its way from the command to the provider.
Everything that is stored or logged uses :class:`AccountRef`: the last four characters and
a keyed fingerprint (HMAC-SHA256), which lets two requests be compared without the number.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from domain.account_numbers import check_no_account_number
from domain.errors import ErrorCode, PaygateError
from domain.text import check_characters, check_text

_NUMBER: Final = re.compile(r"\A[A-Za-z0-9_]{4,64}\Z")
MAX_HOLDER_NAME_LENGTH: Final = 140


class AccountType(StrEnum):
    CARD = "card"
    BANK_ACCOUNT = "bank_account"
    IBAN = "iban"
    WALLET = "wallet"
    TOKEN = "token"  # noqa: S105 - a provider's token or test payment method, such as pm_card_visa


def mask_account_number(number: str) -> str:
    """``4242424242424242`` -> ``****4242``; short numbers show nothing."""
    if len(number) <= 4:
        return "****"
    return "****" + number[-4:]


def fingerprint_account_number(number: str, key: bytes) -> str:
    return hmac.new(key, number.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class AccountRef:
    """What may be stored or logged about an account."""

    type: AccountType
    masked: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Account:
    """An account with its clear number. ``repr`` masks the number so it cannot leak by accident."""

    type: AccountType
    number: str = field(repr=False)
    holder_name: str | None = None

    @classmethod
    def parse(
        cls, type_: object, number: object, holder_name: object = None, *, param: str
    ) -> Account:
        # An empty ``param``: the account is the whole body (POST /v1/payment_methods).
        prefix = f"{param}." if param else ""
        check_characters(type_, f"{prefix}type")
        try:
            account_type = AccountType(str(type_))
        except ValueError:
            raise PaygateError(
                ErrorCode.INVALID_REQUEST,
                f"account type must be one of: {', '.join(t.value for t in AccountType)}",
                param=f"{prefix}type",
            ) from None
        # The message names a code point and a position only, never the number.
        check_characters(number, f"{prefix}number")
        if not isinstance(number, str) or not _NUMBER.match(number):
            # Never echo the number back: it may be a real one.
            raise PaygateError(
                ErrorCode.INVALID_REQUEST,
                "account number must be 4 to 64 letters, digits or underscores",
                param=f"{prefix}number",
            )
        holder = None
        if holder_name is not None:
            holder = check_text(
                holder_name,
                param=f"{prefix}holderName",
                name="holderName",
                min_length=0,
                max_length=MAX_HOLDER_NAME_LENGTH,
            )
            # The holder name travels in clear beside the vaulted number (the commands
            # topic, a dead letter): a number typed into it would too.
            check_no_account_number(holder, param=f"{prefix}holderName", name="holderName")
        return cls(account_type, number, holder)

    @property
    def masked(self) -> str:
        return mask_account_number(self.number)

    def ref(self, fingerprint_key: bytes) -> AccountRef:
        return AccountRef(
            self.type, self.masked, fingerprint_account_number(self.number, fingerprint_key)
        )

    def __str__(self) -> str:
        return f"{self.type.value} {self.masked}"
