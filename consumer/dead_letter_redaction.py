"""No clear account number reaches the dead-letter topic.

A command can be dead-lettered for a reason that has nothing to do with its accounts (an
amount, a text field), or before it decoded at all. Where clear numbers are accepted on
Kafka, its bytes may then hold one; the dead-letter topic keeps its records for weeks. So
before a dead letter is written:

- a decodable CreatePayment has each clear number put into the vault, and is re-encoded
  with the token instead (newest schema): it can still be fixed and re-published
  (``paygate dlq republish``), and it never holds the number;
- a decodable CreatePayment whose metadata or holder names hold what the one detector of
  account numbers finds (domain.account_numbers: a Luhn-valid card number, a valid IBAN;
  the domain refuses such text, so that is why it is here) is re-encoded with those
  masked to their last four, its ids and key untouched, as the vaulted one is;
- a decodable command without a clear number is kept byte for byte (its idempotency key
  and ids must survive a re-publish exactly);
- anything else (undecodable bytes, a number the account rules refuse, such as one
  written in groups, a ``clientId`` the domain refuses, which the vault could not store
  the token under) has every run of 8 to 19 digits and every IBAN-shaped run, each
  character perhaps after one space or dash, masked in place, all but its last four
  letters or digits; the masking keeps the length, so Avro framing stays intact. Such a
  message could never be processed anyway; an id in it may be masked too.

If the vault cannot be reached the redaction raises, and the dead letter is retried (the
record handling never lets the offset pass a message that is nowhere): a clear number is
never written for want of a vault. Any other failure to vault the numbers (one retrying
cannot change) masks them in place: a redaction that raised for good would hold the
message, and its partition, for ever.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Final

from consumer.account_intake import AccountVault
from consumer.failures import FailureKind, classify
from domain.account_numbers import scrub
from domain.accounts import Account
from domain.errors import PaygateError
from domain.payments import check_client_id
from schemas.codec import CREATE_PAYMENT
from schemas.payments import PaymentMessages

# Numbers as machines and as people write them: 8 to 19 digits, or an IBAN, each character
# perhaps after one space or dash ("4242 4242 4242 4242", "DE89 3704 0044 ..."). The account
# rules refuse the grouped forms, so a command carrying one is masked here, never vaulted.
_DIGIT_RUN: Final = re.compile(rb"[0-9](?:[ \-]?[0-9]){7,18}")
_IBAN_RUN: Final = re.compile(rb"[A-Z]{2}[0-9]{2}(?:[ \-]?[A-Z0-9]){10,30}")
_SEPARATORS: Final = b" -"
_ACCOUNTS: Final = ("payerAccount", "payeeAccount")


def mask_numbers_in(data: bytes) -> bytes:
    """``data`` with every digit run and IBAN-shaped run masked but its last four letters
    or digits; separators stay, so the length does."""

    def masked(match: re.Match[bytes]) -> bytes:
        run = bytearray(match.group(0))
        shown = 0
        for i in range(len(run) - 1, -1, -1):
            if run[i] in _SEPARATORS:
                continue
            if shown < 4:
                shown += 1
            else:
                run[i] = ord("*")
        return bytes(run)

    return _DIGIT_RUN.sub(masked, _IBAN_RUN.sub(masked, data))


def _scrubbed_holder(account: dict[str, Any] | None) -> dict[str, Any] | None:
    """``account`` with its holder name masked, or None if there is nothing to mask."""
    holder = None if account is None else account.get("holderName")
    if account is None or not isinstance(holder, str) or scrub(holder) == holder:
        return None
    return {**account, "holderName": scrub(holder)}


class DeadLetterRedaction:
    def __init__(
        self, messages: PaymentMessages, vault: AccountVault, *, retention: timedelta
    ) -> None:
        self._messages = messages
        self._vault = vault
        self._retention = retention

    async def __call__(self, value: bytes) -> bytes:
        decoded = self._messages.command_record(value)
        if decoded is None:
            return mask_numbers_in(value)
        name, record = decoded
        if name != CREATE_PAYMENT:
            return value
        metadata: dict[str, str] = record.get("metadata") or {}
        scrubbed = {scrub(key): scrub(item) for key, item in metadata.items()}
        if len(scrubbed) != len(metadata):
            # Two keys that differ only in their numbers: masking merged them.
            return mask_numbers_in(value)
        # A holder name is free text beside the account, refused like metadata when it
        # holds a number: masked the same way.
        holders = {name: _scrubbed_holder(record.get(name)) for name in _ACCOUNTS}
        record = {
            **record,
            **{name: account for name, account in holders.items() if account is not None},
        }
        holders_changed = any(account is not None for account in holders.values())
        if not any((record.get(account) or {}).get("number") is not None for account in _ACCOUNTS):
            if scrubbed == metadata and not holders_changed:
                return value
            try:
                return self._messages.encode_create_payment_record({**record, "metadata": scrubbed})
            except Exception:
                # Re-encoding what just decoded should not fail; if it ever does, the
                # message is masked in place rather than kept with its numbers.
                return mask_numbers_in(value)
        try:
            # The vault stores the token under the command's scope: one the domain refuses
            # (too long, a NUL) the database may refuse too, for good, and the router
            # retries a dead letter until it is written. Such a command can never be
            # processed, so it is masked like any other that cannot.
            client_id = check_client_id(record.get("clientId"))
            clear = {
                name: Account.parse(record[name]["type"], record[name]["number"], None, param=name)
                for name in _ACCOUNTS
                if record[name].get("number") is not None
            }
        except PaygateError:
            return mask_numbers_in(value)
        redacted: dict[str, Any] = {**record, "metadata": scrubbed}
        try:
            for name, account in clear.items():
                vaulted = await self._vault.tokenize(
                    account, client_id=client_id, expires_in=self._retention
                )
                redacted[name] = {**record[name], "number": None, "token": vaulted.token}
            return self._messages.encode_create_payment_record(redacted)
        except Exception as exc:
            # A vault that is down makes the dead letter wait (the router retries it); any
            # other failure would fail again on every retry and stop the partition for
            # good, so the numbers are masked in place instead.
            if classify(exc).kind is FailureKind.TRANSIENT:
                raise
            return mask_numbers_in(value)
