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
  the token under) has every run of 8 to 19 digits and every IBAN-shaped run masked in
  place, all but its last four letters or digits. A run's characters may stand apart as
  the text detector reads them: separated by its group separators (space, dash, dot,
  slash, plus, no-break and thin spaces) and invisible characters (zero-width spaces, soft
  hyphens, ...), up to six between two, each perhaps percent-encoded; its digits may be
  full-width or percent-encoded. The masking keeps the length, so Avro framing stays
  intact. Such a message could never be processed anyway; an id, a date or an address in
  it may be masked too.

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
from domain.account_numbers import GROUP_SEPARATORS, scrub
from domain.accounts import Account
from domain.errors import PaygateError
from domain.payments import check_client_id
from domain.text_folding import INVISIBLE_CHARACTERS
from schemas.codec import CREATE_PAYMENT
from schemas.payments import PaymentMessages

_ACCOUNTS: Final = ("payerAccount", "payeeAccount")


def _hex(value: int) -> bytes:
    """``value`` as two hex digits, either case (a URL may encode in either)."""
    return b"".join(
        b"[%s%s]" % (char.upper().encode(), char.encode()) if char.isalpha() else char.encode()
        for char in f"{value:02x}"
    )


def _written(char: str) -> bytes:
    """``char`` as a pattern: its UTF-8 bytes, or those bytes percent-encoded."""
    data = char.encode()
    return re.escape(data) + b"|" + b"".join(b"%" + _hex(byte) for byte in data)


# What the text detector reads as a digit (an ASCII or a full-width one) and between digits
# (domain.account_numbers' separators, domain.text_folding's invisible characters), as
# UTF-8 and as percent-encoded UTF-8: the bytes are never decoded, so the run's pieces are.
_DIGIT: Final = (
    b"(?:"
    + b"|".join(_written(char) for char in "0123456789")
    + rb"|\xef\xbc[\x90-\x99]|%[Ee][Ff]%[Bb][Cc]%9[0-9])"  # full-width
)
_ALNUM: Final = rb"(?:[A-Za-z]|" + _DIGIT + b")"
_INVISIBLE: Final = b"(?:" + b"|".join(_written(char) for char in INVISIBLE_CHARACTERS) + b")"
_SEPARATOR: Final = b"(?:" + b"|".join(_written(char) for char in GROUP_SEPARATORS) + b")"
_GAP: Final = b"(?:" + _INVISIBLE + b"|" + _SEPARATOR + b")"


def _after_invisibles(character: bytes) -> bytes:
    return b"(?:" + _INVISIBLE + b"*" + character + b")"


_IBAN_CHARACTER: Final = _after_invisibles(_ALNUM)
_IBAN_GROUP_BREAK: Final = _INVISIBLE + b"*" + _SEPARATOR + b"{1,3}"
# Numbers as machines and as people write them: 8 to 19 digits with up to six separators
# or invisible characters between two ("4242 4242 4242 4242", a zero-width space after
# every digit); an IBAN (either case) contiguous or in groups of four, as the text detector
# reads one ("DE89-3704-0044-..."), and in capitals with a space or a dash before any of
# its characters. The account rules refuse the grouped forms, so a command carrying one is
# masked here, never vaulted.
_DIGIT_RUN: Final = re.compile(_DIGIT + b"(?:" + _GAP + b"{0,6}" + _DIGIT + b"){7,18}")
_IBAN_RUN: Final = re.compile(
    b"[A-Za-z]"
    + _after_invisibles(b"[A-Za-z]")
    + _after_invisibles(_DIGIT)
    + b"{2}(?:"
    + _IBAN_CHARACTER
    + b"{10,30}|(?:"
    + _IBAN_GROUP_BREAK
    + _IBAN_CHARACTER
    + b"{4}){2,7}(?:"
    + _IBAN_GROUP_BREAK
    + _IBAN_CHARACTER
    + b"{1,4})?)"
)
_CAPITAL_IBAN_RUN: Final = re.compile(rb"[A-Z]{2}[0-9]{2}(?:[ \-]?[A-Z0-9]){10,30}")
# A run read piece by piece: what stands between characters (group 1) or a character.
_PIECE: Final = re.compile(b"(" + _GAP + b")|" + _ALNUM)
_SHOWN: Final = 4


def mask_numbers_in(data: bytes) -> bytes:
    """``data`` with every digit run and IBAN-shaped run masked but its last four letters
    or digits; what stands between them stays, and each masked one becomes as many ``*``
    as it had bytes, so the length does too."""

    def masked(match: re.Match[bytes]) -> bytes:
        run = bytearray(match.group(0))
        characters = [piece for piece in _PIECE.finditer(run) if piece.group(1) is None]
        for character in characters[: len(characters) - _SHOWN]:
            start, end = character.span()
            run[start:end] = b"*" * (end - start)
        return bytes(run)

    for run in (_IBAN_RUN, _CAPITAL_IBAN_RUN, _DIGIT_RUN):
        data = run.sub(masked, data)
    return data


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
