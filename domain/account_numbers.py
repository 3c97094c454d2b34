"""What looks like an account number in free text: the one detector paygate has.

The log scrubber masks what it finds (paygate.jsonlog), a command's free text (metadata)
is refused when it holds one (domain.payments), and so is a Kafka message key that is not
its command's order id (consumer.record_handling); the dead-letter redaction masks the
same findings in what it keeps. One detector, so what is refused at the door is always
masked in a log line; the scrubber masks more (a Luhn-valid run whatever its first digit,
see :func:`scrub`), since masking too much costs a log line some digits and refusing too
much costs a merchant a payment. It finds:

- a card number: 12 to 19 digits (of any script: full-width ones too), contiguous or in
  groups (``4242 4242 4242 4242``, ``3782-822463-10005``, ``4242.4242.4242.4242``; one to
  three separators between groups, listed at :data:`GROUP_SEPARATORS`), that starts as a
  card network's numbers do (3: American Express, Diners, JCB; 4: Visa; 5: Mastercard,
  Maestro; 6: Discover, UnionPay, Maestro; and of the 2s only 2200 to 2204, Mir, and 2221
  to 2720, Mastercard's 2-series: a compact timestamp starts with 20) and passes the Luhn
  check;
- an IBAN: two letters, two check digits and 11 to 30 letters or digits, contiguous or in
  groups of four (the same separators), that passes the ISO 13616 mod-97 check; in capitals
  15 to 34 characters long, with a small letter (``de89 3704 ...``) exactly as long as its
  country's IBANs (domain.iban_lengths).

The text is read as a person or a decoder reads it (domain.text_folding): invisible
characters (zero-width spaces, joiners, soft hyphens, ...) anywhere, even between every
digit, are skipped; percent-encoding (``4242%204242...``, ``%34%32...``, from a URL) and
JSON's ``\\uXXXX`` escapes (a JSON log line's) are decoded. What is masked is the span of
the original text the number was read from, escapes and invisible characters included.

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
from domain.iban_lengths import IBAN_LENGTHS
from domain.text_folding import fold, folded

# Each pattern starts with the character class its match must start with, and checks what
# precedes that character after it (the lookbehind spans it): a pattern that starts with a
# lookbehind is tried at every position of the line, one that starts with a class only
# where that class matches. Same matches as the lookbehind first (a test compares them on
# generated text); the scrubber's own cost per JSON log line fell from 17 to 9 us.
# What people put between a card's or an IBAN's groups, one to three of them: a space, a
# dash, a dot, a slash, a plus (a space in a query string), a no-break, figure, thin or
# narrow no-break space (each would otherwise carry a number past the refusal into the
# store, in clear). Invisible characters (a zero-width space) are taken out before the
# patterns read the text (domain.text_folding), so they may stand anywhere.
GROUP_SEPARATORS: Final = " -./+\u00a0\u2007\u2009\u202f"
_SEPARATORS: Final = f"[{re.escape(GROUP_SEPARATORS)}]{{1,3}}"
CARD_PATTERN: Final = re.compile(
    r"\d(?<![A-Za-z0-9]\d)"  # a digit, after no letter or digit
    r"(?:\d{11,18}"  # contiguous: 12 to 19 digits
    rf"|\d{{3}}(?:{_SEPARATORS}\d{{4}}){{2}}{_SEPARATORS}\d{{1,7}}"  # 4-4-4-n
    rf"|\d{{3}}{_SEPARATORS}\d{{6}}{_SEPARATORS}\d{{4,5}})"  # 4-6-5 (Amex), 4-6-4 (Diners)
    r"(?![A-Za-z0-9])"
)
_SEPARATORS_IN_A_MATCH: Final = re.compile(_SEPARATORS)
# An IBAN's match starts at its check digits, after a two-letter country code that starts
# a word: a pattern that started at a letter would be tried at every small letter of a line
# (small letters are read too: ``de89 3704 ...``).
IBAN_PATTERN: Final = re.compile(
    r"\d(?<=(?<![A-Za-z0-9])[A-Za-z]{2}\d)\d"  # the check digits, after the country code
    r"(?:[A-Za-z0-9]{11,30}"  # contiguous
    rf"|(?:{_SEPARATORS}[A-Za-z0-9]{{4}}){{2,7}}(?:{_SEPARATORS}[A-Za-z0-9]{{1,4}})?)"  # groups
    r"(?![A-Za-z0-9])"
)
_COUNTRY_CODE_LENGTH: Final = 2
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


def is_iban(compact: str) -> bool:
    """``compact`` (separators removed) has an IBAN's length and passes mod 97. In capitals,
    15 to 34 characters; with a small letter, exactly its registry country's length
    (domain.iban_lengths), since small letters are mostly words and ids."""
    if compact == compact.upper():
        length_fits = 15 <= len(compact) <= 34
    else:
        length_fits = IBAN_LENGTHS.get(compact[:_COUNTRY_CODE_LENGTH].upper()) == len(compact)
    return length_fits and iban_valid(compact)


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


# A finding: where it is in the text read, and what replaces it.
_Finding = tuple[int, int, str]


def _findings(text: str, *, any_issuer: bool) -> list[_Finding]:
    """The IBANs, then the cards not inside one (an IBAN's digits may look like a card),
    in the order they appear."""
    found: list[_Finding] = []
    for match in IBAN_PATTERN.finditer(text):
        start = match.start() - _COUNTRY_CODE_LENGTH
        compact = _SEPARATORS_IN_A_MATCH.sub("", text[start : match.end()])
        if is_iban(compact):
            found.append((start, match.end(), mask(compact)))
    ibans = found[:]
    for match in CARD_PATTERN.finditer(text):
        start, end = match.span()
        if any(start < iban_end and iban_start < end for iban_start, iban_end, _ in ibans):
            continue
        digits = _SEPARATORS_IN_A_MATCH.sub("", match.group(0))
        if is_card_number(digits, any_issuer=any_issuer) and not _ends_a_uuid(match):
            # Shown in ASCII digits whatever the script, so a JSON log line stays ASCII.
            shown = digits if digits.isascii() else "".join(str(int(char)) for char in digits)
            found.append((start, end, mask(shown)))
    if ibans and len(found) > len(ibans):
        found.sort()
    return found


def _masked(text: str, *, any_issuer: bool) -> str:
    read = folded(text)
    found = _findings(text if read is None else read, any_issuer=any_issuer)
    if not found:
        return text
    # Where each character was read from is worked out only now: most text holds nothing.
    spans = None if read is None else fold(text)
    pieces: list[str] = []
    kept_from = 0
    for start, end, replacement in found:
        if spans is not None:
            start, end = spans.original_span(start, end)
        pieces += (text[kept_from:start], replacement)
        kept_from = end
    pieces.append(text[kept_from:])
    return "".join(pieces)


def scrub(text: str) -> str:
    """``text`` with every card number and valid IBAN the detector finds masked to its last
    four, a Luhn-valid run of card length masked whatever its first digit: what is only
    masked may err towards masking (a log line loses an id's digits), so it covers the
    cards no network prefix names (UATP, fleet cards) too. Found as the text reads
    (domain.text_folding): through invisible characters, percent-encoding and JSON escapes,
    which are masked with the number they were part of."""
    return _masked(text, any_issuer=True)


def holds_account_number(text: str) -> bool:
    """Whether the detector finds a card number (with a card network's prefix) or an IBAN
    in ``text``. What it finds, :func:`scrub` masks too (it masks more: a refusal must not
    refuse a millisecond timestamp or a numeric id that passes the Luhn check)."""
    read = folded(text)
    return bool(_findings(text if read is None else read, any_issuer=False))


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
    scrubbed = _masked(text, any_issuer=False)
    return data if scrubbed == text else scrubbed.encode("utf-8", "surrogateescape")
