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
# What follows a card's first digit, and an IBAN's first check digit.
_CARD_REST: Final = (
    r"\d{11,18}"  # contiguous: 12 to 19 digits
    rf"|\d{{3}}(?:{_SEPARATORS}\d{{4}}){{2}}{_SEPARATORS}\d{{1,7}}"  # 4-4-4-n
    rf"|\d{{3}}{_SEPARATORS}\d{{6}}{_SEPARATORS}\d{{4,5}}"  # 4-6-5 (Amex), 4-6-4 (Diners)
)
_IBAN_REST: Final = (
    r"\d(?:[A-Za-z0-9]{11,30}"  # contiguous
    rf"|(?:{_SEPARATORS}[A-Za-z0-9]{{4}}){{2,7}}(?:{_SEPARATORS}[A-Za-z0-9]{{1,4}})?)"  # groups
)
_CARD_START: Final = r"(?<![A-Za-z0-9]\d)"  # the digit is after no letter or digit
# An IBAN's match starts at its check digits, after a two-letter country code that starts
# a word: a pattern that started at a letter would be tried at every small letter of a line
# (small letters are read too: ``de89 3704 ...``).
_IBAN_START: Final = r"(?<=(?<![A-Za-z0-9])[A-Za-z]{2}\d)"
_WORD_END: Final = r"(?![A-Za-z0-9])"
CARD_PATTERN: Final = re.compile(rf"\d{_CARD_START}(?:{_CARD_REST}){_WORD_END}")
IBAN_PATTERN: Final = re.compile(rf"\d{_IBAN_START}{_IBAN_REST}{_WORD_END}")
# Both in one pass over the digits of a line: two passes cost a log line half as much again.
# Its matches are CARD_PATTERN's and IBAN_PATTERN's, but for cards inside an IBAN's shape
# (:func:`_findings` looks for those when the shape is no IBAN).
ACCOUNT_PATTERN: Final = re.compile(
    rf"\d(?:{_CARD_START}(?P<card>{_CARD_REST})|{_IBAN_START}(?P<iban>{_IBAN_REST})){_WORD_END}"
)
_SEPARATORS_IN_A_MATCH: Final = re.compile(_SEPARATORS)
_COUNTRY_CODE_LENGTH: Final = 2
# What precedes the last group of a UUID (8-4-4-4-12 hex digits).
_UUID_HEAD: Final = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}\Z")
_UUID_HEAD_LENGTH: Final = 24
_UUID_TAIL_LENGTH: Final = 12
_CARD_NETWORK_DIGITS: Final = frozenset("3456")
_CARD_NETWORK_2_SERIES: Final = (range(2200, 2205), range(2221, 2721))


# Every second digit from the right doubled, its digits summed (6 -> 12 -> 3): by table,
# so the whole check runs in C (the scrubber checks every run of card length in a line).
_DOUBLED: Final = str.maketrans("0123456789", "0246813579")


def luhn_valid(digits: str) -> bool:
    """The Luhn check of a string of digits (card numbers pass it)."""
    if not digits.isascii():
        digits = "".join(str(int(char)) for char in digits)  # full-width and other scripts
    kept, doubled = digits[-1::-2], digits[-2::-2].translate(_DOUBLED)
    return (sum(map(int, kept)) + sum(map(int, doubled))) % 10 == 0


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


def _card(match: re.Match[str], *, any_issuer: bool) -> _Finding | None:
    digits = match.group(0)
    if not digits.isdigit():
        digits = _SEPARATORS_IN_A_MATCH.sub("", digits)
    if not is_card_number(digits, any_issuer=any_issuer) or _ends_a_uuid(match):
        return None
    # Shown in ASCII digits whatever the script, so a JSON log line stays ASCII.
    shown = digits if digits.isascii() else "".join(str(int(char)) for char in digits)
    return match.start(), match.end(), mask(shown)


def _findings(text: str, *, any_issuer: bool) -> list[_Finding]:
    """The cards and IBANs in ``text``, in the order they appear."""
    found: list[_Finding] = []
    covered = 0  # where the cards looked for inside an IBAN's shape end
    for match in ACCOUNT_PATTERN.finditer(text):
        if match.start() < covered:
            continue
        if match.lastgroup == "card":
            card = _card(match, any_issuer=any_issuer)
            if card is not None:
                found.append(card)
            continue
        start = match.start() - _COUNTRY_CODE_LENGTH
        compact = _SEPARATORS_IN_A_MATCH.sub("", text[start : match.end()])
        if is_iban(compact):
            found.append((start, match.end(), mask(compact)))
            continue
        # Not an IBAN: its digits may still hold a card, which may run on past it.
        for inner in CARD_PATTERN.finditer(text, match.start()):
            if inner.start() >= match.end():
                break
            card = _card(inner, any_issuer=any_issuer)
            if card is not None:
                found.append(card)
            covered = inner.end()
    return found


def _read(text: str) -> str | None:
    # folded()'s own first test, inlined: nearly every log line is ASCII with neither a
    # "%" nor a backslash, and reads as it is (a search for one character runs as memchr;
    # one for "\\u" cost a log line a tenth of the detector's time).
    if text.isascii() and "%" not in text and "\\" not in text:
        return None
    return folded(text)


def _masked(text: str, *, any_issuer: bool) -> str:
    read = _read(text)
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
    read = _read(text)
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
