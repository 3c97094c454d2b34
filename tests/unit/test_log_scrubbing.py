"""The log scrubber, both ways: what looks like an account number is masked, identifiers
an operator searches for are not."""

from __future__ import annotations

import json
import logging
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.account_numbers import (
    ACCOUNT_PATTERN,
    _ends_a_uuid,
    _findings,
    iban_valid,
    is_card_number,
    is_iban,
    luhn_valid,
    mask,
    scrub,
)
from domain.account_numbers import CARD_PATTERN as _CARD
from domain.account_numbers import IBAN_PATTERN as _IBAN
from paygate.jsonlog import JsonFormatter

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        ("card 4242424242424242 ok", "card ****4242 ok"),
        ("card 4242 4242 4242 4242 ok", "card ****4242 ok"),
        ("card 4242-4242-4242-4242 ok", "card ****4242 ok"),
        ("amex 378282246310005", "amex ****0005"),
        ("amex 3782 822463 10005", "amex ****0005"),
        ("12 digits 401288888886", "12 digits ****8886"),
        ("19 digits 6011000990139424009", "19 digits ****4009"),
        ("iban DE89370400440532013000.", "iban ****3000."),
        ("iban DE89 3704 0044 0532 0130 00 paid", "iban ****3000 paid"),
        ("iban GB82WEST12345698765432", "iban ****5432"),
        ('{"number":"4000000000000002"}', '{"number":"****0002"}'),
        ("pay_4242424242424242", "pay_****4242"),
    ],
)
def test_account_numbers_are_masked_to_their_last_four(text: str, scrubbed: str) -> None:
    assert scrub(text) == scrubbed


@pytest.mark.parametrize(
    "text",
    [
        "order 1796538959715 accepted",  # the order id of issue 14: 13 digits, not Luhn-valid
        "order-1796538959715",
        "offset 12345678 committed",
        "order 4242424242424241 is no card",  # 16 digits, Luhn fails by one
        "amount 1050 cents",
        "at 1767268800000 ms",  # a timestamp: 13 digits, not Luhn-valid
        "pay_0f3a12345678901234",
        "attempt pay_6e4b0c2a9f1d4e3b8a7c6d5e4f3a2b1c-a1",
        "DE89370400440532013001 is no IBAN",  # check digits wrong
        "a run of 20 digits 42424242424242424242 is no card",
        "ORDER2024XY00000000000",  # letters and digits, not an IBAN
    ],
)
def test_identifiers_stay_searchable(text: str) -> None:
    assert scrub(text) == text


def test_the_checks() -> None:
    assert luhn_valid("4242424242424242")
    assert not luhn_valid("1796538959715")
    assert iban_valid("DE89370400440532013000")
    assert not iban_valid("DE89370400440532013001")


def _line(formatter: JsonFormatter, message: str, **extra: object) -> dict[str, object]:
    record = logging.LogRecord("paygate.test", logging.INFO, __file__, 1, message, None, None)
    for key, value in extra.items():
        setattr(record, key, value)
    parsed: dict[str, object] = json.loads(formatter.format(record))
    return parsed


def test_a_log_line_masks_accounts_in_its_message_and_fields_and_keeps_ids() -> None:
    line = _line(
        JsonFormatter(),
        "echo of payer 4242 4242 4242 4242 for order 1796538959715",
        order_id="1796538959715",
        request={"payee": {"iban": "NL12 3456", "number": "DE89370400440532013000"}},
    )
    assert line["msg"] == "echo of payer ****4242 for order 1796538959715"
    assert line["order_id"] == "1796538959715"
    # "iban" is an account field: masked whatever it looks like; the IBAN by its check.
    assert line["request"] == {"payee": {"iban": "****3456", "number": "****3000"}}


def test_account_fields_are_configurable() -> None:
    formatter = JsonFormatter(account_fields=["Bank_Account"])
    line = _line(formatter, "refund", bank_account="12345678", iban="NL12 3456")
    assert (line["bank_account"], line["iban"]) == ("****5678", "NL12 3456")


# The scrubber's patterns as they were before they were reordered for speed (a lookbehind
# first): the reference the faster ones must agree with, match for match.
_SEP = "[ \\-./+\u00a0\u2007\u2009\u202f]{1,3}"  # the separators of CARD_PATTERN
_CARD_BEFORE = re.compile(
    r"(?<![A-Za-z0-9])"
    r"(?:\d{12,19}"
    rf"|\d{{4}}(?:{_SEP}\d{{4}}){{2}}{_SEP}\d{{1,7}}"
    rf"|\d{{4}}{_SEP}\d{{6}}{_SEP}\d{{4,5}})"
    r"(?![A-Za-z0-9])"
)
# An IBAN's match starts at its check digits (the country code is read behind them).
_IBAN_BEFORE = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z]{2}"
    r"(?P<match>\d{2}(?:[A-Za-z0-9]{11,30}"
    rf"|(?:{_SEP}[A-Za-z0-9]{{4}}){{2,7}}(?:{_SEP}[A-Za-z0-9]{{1,4}})?))"
    r"(?![A-Za-z0-9])"
)
# Digits (an Arabic-Indic one too: \d matches it), capitals, small letters and the
# separators the patterns know, so generated text is dense with near-matches.
_ALPHABET = '0123456789٣ABDEGRTWZadexz _-.:+"{}/\u00a0\u200b'


def _spans(pattern: re.Pattern[str], text: str) -> list[tuple[int, int]]:
    if "match" in pattern.groupindex:
        return [match.span("match") for match in pattern.finditer(text)]
    return [match.span() for match in pattern.finditer(text)]


@settings(max_examples=2000)
@given(st.text(alphabet=_ALPHABET, max_size=60))
def test_the_faster_patterns_find_what_the_patterns_before_them_found(text: str) -> None:
    assert _spans(_CARD, text) == _spans(_CARD_BEFORE, text)
    assert _spans(_IBAN, text) == _spans(_IBAN_BEFORE, text)


def _two_passes(text: str) -> list[tuple[int, int, str]]:
    """The findings of one pass per pattern: the valid IBANs, then the cards that are not
    inside one (what the detector found before both went into one pattern)."""
    ibans = []
    for match in _IBAN.finditer(text):
        compact = re.sub(r"[^0-9A-Za-z]", "", text[match.start() - 2 : match.end()])
        if is_iban(compact):
            ibans.append((match.start() - 2, match.end(), mask(compact)))
    cards = []
    for match in _CARD.finditer(text):
        if any(match.start() < end and start < match.end() for start, end, _ in ibans):
            continue
        digits = re.sub(r"\D", "", match.group(0))
        if is_card_number(digits, any_issuer=True) and not _ends_a_uuid(match):
            shown = "".join(str(int(char)) for char in digits)
            cards.append((match.start(), match.end(), mask(shown)))
    return sorted(ibans + cards)


@settings(max_examples=3000)
@given(st.text(alphabet=_ALPHABET, max_size=80))
def test_the_one_pass_pattern_finds_what_a_pass_per_pattern_found(text: str) -> None:
    assert _findings(text, any_issuer=True) == _two_passes(text)
    for match in ACCOUNT_PATTERN.finditer(text):
        kind = _CARD if match.lastgroup == "card" else _IBAN
        assert match.span() in _spans(kind, text)


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("4242424242424242", 1),
        ("a4242424242424242", 0),
        ("_4242424242424242 x", 1),
        ("4242 4242 4242 4242", 1),
        ("x4242 4242 4242 4242", 0),
        ("3782 822463 10005", 1),
        ("DE89370400440532013000", 1),
        ("XDE89370400440532013000", 0),
        ("-DE89 3704 0044 0532 0130 00", 2),  # the card pattern finds its digits too
        ("GB82WEST12345698765432 DE89370400440532013000", 2),
    ],
)
def test_the_faster_patterns_agree_at_the_edges(text: str, matches: int) -> None:
    cards, ibans = _spans(_CARD, text), _spans(_IBAN, text)
    assert cards == _spans(_CARD_BEFORE, text)
    assert ibans == _spans(_IBAN_BEFORE, text)
    assert len(cards) + len(ibans) == matches


# A JSON log line escapes every character outside ASCII (\\u200b), which hid from the old
# scrubber every number written with one: it reads the escapes now (domain.text_folding).
HIDDEN_IN_A_JSON_LINE = {
    "zero-width-after-each-digit": "\u200b".join("4242424242424242"),
    "soft-hyphen-after-each-digit": "\u00ad".join("4242424242424242"),
    "no-break-spaces": "4242\u00a04242\u00a04242\u00a04242",
    "full-width-digits": "\uff14\uff12\uff14\uff12" * 4,
    "percent-encoded": "4242%204242%204242%204242",
    "iban-no-break-spaces": "DE89\u00a03704\u00a00044\u00a00532\u00a00130\u00a000",
    "iban-dashes-small-letters": "de89-3704-0044-0532-0130-00",
}


@pytest.mark.parametrize("number", HIDDEN_IN_A_JSON_LINE.values(), ids=HIDDEN_IN_A_JSON_LINE)
def test_a_json_log_line_masks_a_number_its_escapes_or_encoding_hid(number: str) -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord(
        "paygate.test", logging.INFO, __file__, 1, "GET /v1/x/%s failed", (number,), None
    )
    record.note = {"text": f"paid with {number}"}
    raw = formatter.format(record)
    last_four = "3000" if number.upper().startswith("DE") else "4242"
    parsed = json.loads(raw)
    assert parsed["msg"] == f"GET /v1/x/****{last_four} failed"
    assert parsed["note"] == {"text": f"paid with ****{last_four}"}


def test_a_json_log_line_keeps_ids_and_other_escapes() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord(
        "paygate.test",
        logging.INFO,
        __file__,
        1,
        "caf\u00e9 order\u200b 1796538959715 at 1765062000002 ms, 10%25 paid",
        None,
        None,
    )
    parsed = json.loads(formatter.format(record))
    # The millisecond timestamp passes the Luhn check: masked in a log line (not refused).
    assert parsed["msg"] == "caf\u00e9 order\u200b 1796538959715 at ****0002 ms, 10%25 paid"
