"""What looks like an account number in free text: the one detector paygate has.

The log scrubber masks what it finds (paygate.jsonlog), a command's free text (metadata)
is refused when it holds one (domain.payments), and so is a Kafka message key that is not
its command's order id (consumer.record_handling); the dead-letter redaction masks the
same findings in what it keeps. One detector, so what is refused at the door is always
masked in a log line; the scrubber masks more (a Luhn-valid run whatever its first digit,
see :func:`scrub`), since masking too much costs a log line some digits and refusing too
much costs a merchant a payment. It finds:

- a card number: 12 to 19 digits (of any script: full-width ones too), contiguous or in
  groups (``4242 4242 4242 4242``, ``3782-822463-10005``, ``4242.4242.4242.4242``; the
  separators are listed at :data:`CARD_PATTERN`), that starts as a card network's
  numbers do (3: American Express, Diners, JCB; 4: Visa; 5: Mastercard, Maestro;
  6: Discover, UnionPay, Maestro; and of the 2s only 2200 to 2204, Mir, and 2221 to 2720,
  Mastercard's 2-series: a compact timestamp starts with 20) and passes the Luhn check;
- an IBAN: two letters, two check digits and 11 to 30 letters or digits, contiguous or in
  groups of four, that passes the ISO 13616 mod-97 check.

Everything else stays as it is, and so is never refused: an order id such as
``1796538959715`` (13 digits, not Luhn-valid), a millisecond timestamp (it starts with 1
until the year 2286), a compact timestamp (``20261206231854``), a UUID (its last group is
12 hex digits that may all be digits and pass the Luhn check, so a run that ends a UUID is
not a card), a payment id, an offset.
A random 12-to-19-digit identifier that starts as a card does passes the Luhn check one
time in ten and is then found: the cost of catching every card.

Pure: it imports nothing but the standard library and the error catalogue.
"""

from __future__ import annotations

import re
from typing import Final, Protocol

from domain.errors import ErrorCode, PaygateError

# Each pattern starts with the character class its match must start with, and checks what
# precedes that character after it (the lookbehind spans it): a pattern that starts with a
# lookbehind is tried at every position of the line, one that starts with a class only
# where that class matches. Same matches as the lookbehind first (a test compares them on
# generated text); the scrubber's own cost per JSON log line fell from 17 to 9 us.
# What people put between a card's groups: a space or a dash, and also a dot, a slash, a
# no-break, figure, thin or narrow no-break space, or a zero-width space (each one of them
# would otherwise carry a number past the refusal into the store, in clear).
_GROUP_SEPARATORS: Final = " \\-./\u00a0\u2007\u2009\u202f\u200b"
_SEPARATOR: Final = f"[{_GROUP_SEPARATORS}]"
CARD_PATTERN: Final = re.compile(
    r"\d(?<![A-Za-z0-9]\d)"  # a digit, after no letter or digit
    r"(?:\d{11,18}"  # contiguous: 12 to 19 digits
    rf"|\d{{3}}(?:{_SEPARATOR}\d{{4}}){{2}}{_SEPARATOR}\d{{1,7}}"  # 4-4-4-n
    rf"|\d{{3}}{_SEPARATOR}\d{{6}}{_SEPARATOR}\d{{4,5}})"  # 4-6-5 (Amex), 4-6-4 (Diners)
    r"(?![A-Za-z0-9])"
)
_SEPARATORS_IN_A_MATCH: Final = re.compile(_SEPARATOR)
IBAN_PATTERN: Final = re.compile(
    r"[A-Z](?<![A-Za-z0-9][A-Z])"  # a capital, after no letter or digit
    r"[A-Z]\d{2}"  # the rest of the country code, the check digits
    r"(?:[A-Z0-9]{11,30}"  # contiguous
    r"|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,4})?)"  # printed in groups of four
    r"(?![A-Za-z0-9])"
)
# What precedes the last group of a UUID (8-4-4-4-12 hex digits).
_UUID_HEAD: Final = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}\Z")
_UUID_HEAD_LENGTH: Final = 24
_UUID_TAIL_LENGTH: Final = 12
_CARD_NETWORK_DIGITS: Final = frozenset("3456")
_CARD_NETWORK_2_SERIES: Final = (range(2200, 2205), range(2221, 2721))


def luhn_valid(digits: str) -> bool:
    """The Luhn check of a string of digits (card numbers pass it)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """ISO 13616: the country and check digits moved to the end, letters as 10..35, the
    number is 1 modulo 97."""
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def _starts_as_a_card(digits: str) -> bool:
    if not digits.isascii():
        # Full-width or other script digits: \d finds them and int() reads them, so the
        # network prefix is read the same way.
        digits = "".join(str(int(char)) for char in digits[:4])
    if digits[0] in _CARD_NETWORK_DIGITS:
        return True
    return any(int(digits[:4]) in series for series in _CARD_NETWORK_2_SERIES)


def is_card_number(digits: str, *, any_issuer: bool = False) -> bool:
    """``digits`` (separators removed) has a card's length, network prefix and Luhn check;
    with ``any_issuer``, any first digit (UATP cards start with 1, fleet cards with 7 or 8)."""
    return (
        12 <= len(digits) <= 19
        and digits.isdigit()
        and (any_issuer or _starts_as_a_card(digits))
        and luhn_valid(digits)
    )


def mask(value: str) -> str:
    return "****" + value[-4:]


def _ends_a_uuid(match: re.Match[str]) -> bool:
    start = match.start()
    return len(match.group(0)) == _UUID_TAIL_LENGTH and bool(
        _UUID_HEAD.search(match.string, max(0, start - _UUID_HEAD_LENGTH - 1), start)
    )


def _masked_card(match: re.Match[str], *, any_issuer: bool) -> str:
    digits = _SEPARATORS_IN_A_MATCH.sub("", match.group(0))
    if is_card_number(digits, any_issuer=any_issuer) and not _ends_a_uuid(match):
        return mask(digits)
    return match.group(0)


def _masked_any_card(match: re.Match[str]) -> str:
    return _masked_card(match, any_issuer=True)


def _masked_network_card(match: re.Match[str]) -> str:
    return _masked_card(match, any_issuer=False)


def _masked_iban(match: re.Match[str]) -> str:
    compact = match.group(0).replace(" ", "")
    return mask(compact) if 15 <= len(compact) <= 34 and iban_valid(compact) else match.group(0)


def scrub(text: str) -> str:
    """``text`` with every card number and valid IBAN the detector finds masked to its last
    four, a Luhn-valid run of card length masked whatever its first digit: what is only
    masked may err towards masking (a log line loses an id's digits), so it covers the
    cards no network prefix names (UATP, fleet cards) too."""
    return IBAN_PATTERN.sub(_masked_iban, CARD_PATTERN.sub(_masked_any_card, text))


def _scrub_refusable(text: str) -> str:
    return IBAN_PATTERN.sub(_masked_iban, CARD_PATTERN.sub(_masked_network_card, text))


def holds_account_number(text: str) -> bool:
    """Whether the detector finds a card number (with a card network's prefix) or an IBAN
    in ``text``. What it finds, :func:`scrub` masks too (it masks more: a refusal must not
    refuse a millisecond timestamp or a numeric id that passes the Luhn check)."""
    return _scrub_refusable(text) != text


def check_no_account_number(text: str, *, param: str, name: str) -> None:
    """Refuse free text that holds an account number, with ``account_number_in_text``.

    Free text is stored and published as it is (the payments table, result events, the
    dead-letter topic), and only an account field is vaulted: a number in free text would
    be kept in clear. The message names the field, never the text.
    """
    if holds_account_number(text):
        raise PaygateError(
            ErrorCode.ACCOUNT_NUMBER_IN_TEXT,
            f"{name} holds what looks like a card number or an IBAN; account numbers go in "
            "payerAccount or payeeAccount, never in free text",
            param=param,
        )


class Keyed(Protocol):
    """A command, as far as its Kafka key is concerned."""

    @property
    def order_id(self) -> str: ...


def check_message_key(key: bytes | None, command: Keyed) -> None:
    """Refuse a Kafka message key that holds an account number, unless it is the order id.

    Commands are keyed by their order id, and an order id is an identifier, checked as one:
    a numeric one that happens to pass the Luhn check must not refuse its own commands. Any
    other key that holds a number is refused, so the command is dead-lettered (with the
    key masked) instead of processed; the key itself is named by ``param`` only.
    """
    if key is None:
        return
    text = key.decode("utf-8", "surrogateescape")
    # The detector first: the order id is read only of a key that holds a number.
    if holds_account_number(text) and text != command.order_id:
        raise PaygateError(
            ErrorCode.ACCOUNT_NUMBER_IN_TEXT,
            "the message key holds what looks like a card number or an IBAN; key commands "
            "by their orderId",
            param="key",
        )


def scrub_bytes(data: bytes) -> bytes:
    """``data`` (a Kafka key: any bytes) with what :func:`holds_account_number` finds
    masked; other bytes, even ones that are not UTF-8, kept as they were."""
    text = data.decode("utf-8", "surrogateescape")
    # As the key was refused (check_message_key): a numeric order id that passes the Luhn
    # check keeps keying its dead letter, so it can be re-published under its own key.
    scrubbed = _scrub_refusable(text)
    return data if scrubbed == text else scrubbed.encode("utf-8", "surrogateescape")
