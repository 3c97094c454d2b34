"""What the sandbox acquirer is asked and what it keeps: its request and its ledger row.

:class:`SandboxChargeParams` holds clear account numbers and lives only in memory, on the way
from a request to the decision. :class:`ChargeRecord` is what the ledger stores and the
service shows: the payer's number appears only masked, and the request hash is computed
from masked numbers, so no row says anything more about a number than its last four digits.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from domain.accounts import Account
from domain.money import Money
from domain.payments import PaymentMethod
from providers.sandbox.refund_records import RefundBehaviour


class SandboxStatus(StrEnum):
    """The status of a charge, as the sandbox's API spells it. Only ``authorized`` and
    ``requires_action`` change: a capture makes the first ``succeeded``, a void ``canceled``,
    the end of its hold ``expired``; the payer's action makes the second what
    ``after_action`` says (or ``declined``), and closing it before the payer acts makes it
    ``expired``."""

    SUCCEEDED = "succeeded"
    AUTHORIZED = "authorized"
    DECLINED = "declined"
    REQUIRES_ACTION = "requires_action"
    CANCELED = "canceled"
    EXPIRED = "expired"


class SandboxErrorCode(StrEnum):
    """Why the sandbox declined, in its own vocabulary (paygate maps it in ``transformers``)."""

    CARD_DECLINED = "card_declined"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    INVALID_ACCOUNT = "invalid_account"
    SUSPECTED_FRAUD = "suspected_fraud"


# Derived from the code rather than stored: the ledger keeps the facts, wording may change.
DECLINE_MESSAGES: Final = MappingProxyType(
    {
        SandboxErrorCode.CARD_DECLINED: "The payment was declined.",
        SandboxErrorCode.INSUFFICIENT_FUNDS: "The account has insufficient funds.",
        SandboxErrorCode.INVALID_ACCOUNT: "The account number is not valid.",
        SandboxErrorCode.SUSPECTED_FRAUD: "The payment was declined as suspected fraud.",
    }
)


@dataclass(frozen=True, slots=True)
class SandboxChargeParams:
    """The parameters of one charge. ``Account`` masks its number in ``repr``."""

    amount: Money
    payment_reference: str
    payment_method: PaymentMethod
    payer: Account
    payee: Account
    capture: bool = True  # False: authorize only

    def request_hash(self) -> str:
        """A hash that tells a replay from a conflicting reuse of an idempotency key.

        Account numbers enter masked only: the hash is stored, and an unkeyed hash of a
        16-digit card number could be reversed by brute force. The price is that a reuse
        changing only digits before the last four replays instead of conflicting.
        """
        canonical: dict[str, object] = {
            "amountMinor": self.amount.minor_units,
            "currency": self.amount.currency,
            "paymentReference": self.payment_reference,
            "paymentMethod": self.payment_method.value,
            "payer": [self.payer.type.value, self.payer.masked],
            "payee": [self.payee.type.value, self.payee.masked],
        }
        if not self.capture:
            # Only when set, so that rows stored before authorize-only existed keep their hash.
            canonical["capture"] = False
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ChargeRecord:
    """One ledger row: a charge that succeeded, is authorized or was declined, never a clear
    number. ``captured_minor`` is what refunds may return: the whole amount of a charge
    captured at once, 0 while authorized, the captured amount after a capture."""

    idempotency_key: str
    charge_id: str
    request_hash: str
    payment_reference: str
    amount_minor: int
    currency: str
    payer_masked: str
    status: SandboxStatus
    error_code: SandboxErrorCode | None
    decline_code: str | None
    created_at: datetime
    refunds: RefundBehaviour
    captured_minor: int
    capture_key: str | None = None
    # A charge waiting for the payer: until when, and what it becomes if the payer completes
    # the action (succeeded, or authorized for an authorize-only charge).
    action_expires_at: datetime | None = None
    after_action: SandboxStatus | None = None

    @property
    def message(self) -> str | None:
        return None if self.error_code is None else DECLINE_MESSAGES[self.error_code]
