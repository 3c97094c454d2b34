"""The one detector of account numbers in text: what it finds, and the ids it must leave.

A metadata value or a message key it finds is refused (tests/unit/test_facade_validation.py,
tests/integration/test_account_numbers_in_text.py); the log scrubber masks the same
findings (tests/unit/test_log_scrubbing.py). A false positive refuses a good payment, so
the ordinary ids are listed here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.account_numbers import (
    check_message_key,
    check_no_account_number,
    holds_account_number,
    is_card_number,
    luhn_valid,
    scrub,
    scrub_bytes,
)
from domain.errors import ErrorCode, PaygateError

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class Order:
    order_id: str


CARDS = [
    "4242424242424242",
    "4242 4242 4242 4242",
    "4242-4242-4242-4242",
    "378282246310005",  # American Express
    "3782 822463 10005",
    "5555555555554444",  # Mastercard
    "2223003122003222",  # Mastercard 2-series
    "6011111111111117",  # Discover
    "6200000000000005",  # UnionPay
    "4000056655665556",
    # Grouped by what people type or paste besides a space or a dash.
    "4242.4242.4242.4242",
    "4242/4242/4242/4242",
    "4242\u00a04242\u00a04242\u00a04242",  # no-break spaces
    "4242\u202f4242\u202f4242\u202f4242",  # narrow no-break spaces
    "4242\u200b4242\u200b4242\u200b4242",  # zero-width spaces
    "3782.822463.10005",
    "\uff14\uff12\uff14\uff12" * 4,  # full-width digits
]
IBANS = ["DE89370400440532013000", "DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432"]


@pytest.mark.parametrize("number", CARDS + IBANS)
def test_it_finds_cards_and_ibans_alone_and_in_text(number: str) -> None:
    assert holds_account_number(number)
    assert holds_account_number(f"paid with {number}, thanks")
    assert number not in scrub(f"paid with {number}, thanks")


ORDINARY = [
    "1796538959715",  # an order id, 13 digits
    "1765062000002",  # a millisecond timestamp, and it passes the Luhn check
    "1541815603606036480",  # a snowflake id
    "20261206231854",  # a compact timestamp
    "2026-12-06T23:18:54.123456+00:00",
    "550e8400-e29b-41d4-a716-446655440000",
    "pay_0123456789abcdef0123456789abcdef",
    "order-4242424242424242x",  # digits inside a word are no card
    "****4242",
    "4242424242424241",  # fails the Luhn check
    "42424242424",  # too short
    "DE89370400440532013001",  # fails mod 97
]


# Luhn-valid runs of card length without a card network's prefix: never refused, but
# masked in logs all the same (a UATP card starts with 1, a fleet card with 7 or 8).
MASKED_NOT_REFUSED = ["1765062000002", "122000000000003", "7000000000000000003"]


@pytest.mark.parametrize("text", ORDINARY)
def test_it_leaves_ordinary_ids(text: str) -> None:
    assert not holds_account_number(text)
    if text not in MASKED_NOT_REFUSED:
        assert scrub(text) == text


@pytest.mark.parametrize("text", MASKED_NOT_REFUSED)
def test_a_luhn_valid_run_of_any_issuer_is_masked_in_logs_but_not_refused(text: str) -> None:
    assert luhn_valid(text)
    assert not holds_account_number(f"ref {text}")
    assert scrub(f"ref {text}") == f"ref ****{text[-4:]}"


def test_a_millisecond_timestamp_passing_luhn_is_still_no_card() -> None:
    assert luhn_valid("1765062000002")
    assert not is_card_number("1765062000002")


def test_no_uuid_is_a_card_even_when_its_last_group_passes_luhn() -> None:
    tail = "424242424242"
    assert luhn_valid(tail)
    assert is_card_number(tail)
    assert not holds_account_number(f"550e8400-e29b-41d4-a716-{tail}")
    assert not holds_account_number(f"id {uuid.UUID(int=int(tail))}")
    # The same digits not ending a UUID are a card.
    assert holds_account_number(f"ref-{tail}")


def test_free_text_holding_a_number_is_refused_without_the_number() -> None:
    with pytest.raises(PaygateError) as refused:
        check_no_account_number("4242 4242 4242 4242", param="metadata.note", name="metadata.note")
    assert refused.value.code is ErrorCode.ACCOUNT_NUMBER_IN_TEXT
    assert refused.value.param == "metadata.note"
    assert "4242 4242" not in refused.value.message
    check_no_account_number("order 1796538959715", param="metadata.note", name="metadata.note")


def test_a_message_key_is_refused_only_when_it_is_not_the_order_id() -> None:
    check_message_key(None, Order("order-1"))
    check_message_key(b"order-1", Order("order-1"))
    # A numeric order id that passes the Luhn check keys its own commands.
    check_message_key(b"4242424242424242", Order("4242424242424242"))
    with pytest.raises(PaygateError) as refused:
        check_message_key(b"4242424242424242", Order("order-1"))
    assert (refused.value.code, refused.value.param) == (ErrorCode.ACCOUNT_NUMBER_IN_TEXT, "key")
    check_message_key(b"\xff\xfe", Order("order-1"))  # not UTF-8, holds no number


def test_key_bytes_are_masked_and_other_bytes_kept() -> None:
    assert scrub_bytes(b"4242424242424242") == b"****4242"
    assert scrub_bytes(b"\xffk-4242424242424242") == b"\xffk-****4242"
    assert scrub_bytes(b"order-1\xff") == b"order-1\xff"


# What the detector reads through (domain.text_folding), each refused by the old one.
_INVISIBLES = {
    "zero-width-space": "\u200b",
    "zero-width-non-joiner": "\u200c",
    "zero-width-joiner": "\u200d",
    "word-joiner": "\u2060",
    "byte-order-mark": "\ufeff",
    "soft-hyphen": "\u00ad",
}


@pytest.mark.parametrize("invisible", _INVISIBLES.values(), ids=_INVISIBLES)
def test_an_invisible_character_between_every_digit_hides_no_number(invisible: str) -> None:
    for card in ("4242424242424242", "4242 4242 4242 4242", "378282246310005"):
        hidden = invisible.join(card)
        assert holds_account_number(hidden)
        assert scrub(f"note: {hidden}!") == f"note: ****{card[-4:]}!"
    iban = invisible.join("DE89370400440532013000")
    assert holds_account_number(f"pay to {iban}")
    assert scrub(f"pay to {iban}.") == "pay to ****3000."


PERCENT_ENCODED = {
    "spaces": "4242%204242%204242%204242",
    "dashes": "4242%2D4242%2d4242%2D4242",
    "digits": "%34%32%34%32%34%32%34%32%34%32%34%32%34%32%34%32",
    "some-digits": "4242%34%32424242424242",
    "no-break-spaces": "4242%C2%A04242%C2%A04242%C2%A04242",
    "zero-width-after-each-digit": "%E2%80%8B".join("4242424242424242"),
    "encoded-twice": "4242%25204242%25204242%25204242",
    "query-string-plus": "4242+4242+4242+4242",
    "iban": "DE89%203704%200044%200532%200130%2000",
}


@pytest.mark.parametrize("number", PERCENT_ENCODED.values(), ids=PERCENT_ENCODED)
def test_a_percent_encoded_number_in_a_url_is_found(number: str) -> None:
    last_four = "3000" if number.startswith("DE") else "4242"
    for url in (f"/v1/payments/{number}", f"https://shop.example/in?note={number}&x=1"):
        assert holds_account_number(url)
        scrubbed = scrub(url)
        assert scrubbed == url.replace(number, f"****{last_four}")


IBAN_FORMS = {
    "dashes": "DE89-3704-0044-0532-0130-00",
    "dots": "DE89.3704.0044.0532.0130.00",
    "two-spaces": "DE89  3704  0044  0532  0130  00",
    "no-break-spaces": "DE89\u00a03704\u00a00044\u00a00532\u00a00130\u00a000",
    "narrow-no-break-spaces": "DE89\u202f3704\u202f0044\u202f0532\u202f0130\u202f00",
    "spaced-dashes": "DE89 - 3704 - 0044 - 0532 - 0130 - 00",
    "small-letters": "de89 3704 0044 0532 0130 00",
    "small-letters-contiguous": "de89370400440532013000",
    "small-country-code": "gb82WEST12345698765432",
    "small-letters-in-the-bban": "gb82 west 1234 5698 7654 32",
    "dashed-letters": "GB82-WEST-1234-5698-7654-32",
}


@pytest.mark.parametrize("iban", IBAN_FORMS.values(), ids=IBAN_FORMS)
def test_an_iban_with_other_separators_or_small_letters_is_found(iban: str) -> None:
    assert holds_account_number(iban)
    assert holds_account_number(f"refund to {iban}, thanks")
    last_four = "".join(char for char in iban if char.isalnum())[-4:]
    assert scrub(f"refund to {iban}, thanks") == f"refund to ****{last_four}, thanks"


def _with_check_digits(country: str, bban: str) -> str:
    """``country`` + the check digits that make mod 97 pass + ``bban``."""
    rearranged = bban + country + "00"
    check = 98 - int("".join(str(int(char, 36)) for char in rearranged)) % 97
    return f"{country}{check:02d}{bban}"


ORDINARY_FOLDED = {
    # Percent-encoded ids and timestamps in URLs.
    "query-of-ids": "/v1/payments?orderId=1796538959715&limit=20",
    "encoded-json-timestamp": "%7B%22ts%22%3A1765062000002%7D",
    "encoded-uuid": "id%3D550e8400%2De29b%2D41d4%2Da716%2D424242424242",
    "percent-sign": "10% off order 1796538959715, 100%25 paid",
    # Invisible characters around ordinary ids.
    "zero-width-order-id": "order\u200b-\u200b1796538959715",
    "soft-hyphenated-timestamp": "\u00ad".join("1765062000002"),
    "zero-width-uuid": "\u200b".join("550e8400-e29b-41d4-a716-424242424242"),
    # Words and ids in small letters: not a registry country's length, or no country.
    "words": "de89 is not an iban, nor is ab12 cdef ghij klmn op",
    "hex-id-wrong-length": _with_check_digits("be", "0a1b2c3d4e5f6a7b8c"),
    "hash": "ab12" + "cd34ef56" * 3 + "9",
    "payment-id": "pay_0123456789abcdef0123456789abcdef",
}


@pytest.mark.parametrize("text", ORDINARY_FOLDED.values(), ids=ORDINARY_FOLDED)
def test_ids_behind_encodings_and_invisible_characters_are_not_refused(text: str) -> None:
    assert not holds_account_number(text)
    check_no_account_number(text, param="metadata.note", name="metadata.note")


def test_a_small_letter_iban_needs_its_countrys_length() -> None:
    # The same characters in capitals keep the looser rule (15 to 34 characters): an id in
    # small letters that passes mod 97 is refused only as long as its country's IBANs.
    wrong_length = ORDINARY_FOLDED["hex-id-wrong-length"]
    assert holds_account_number(wrong_length.upper())
    right_length = _with_check_digits("be", "0a1b2c3d4e5f")
    assert len(right_length) == 16
    assert holds_account_number(right_length)


def test_only_the_number_and_what_hid_it_is_masked() -> None:
    text = "a\u200bb 4\u200b2\u200b4\u200b2" + "4242424242424242"[4:] + " c\u200bd %20 e"
    assert scrub(text) == "a\u200bb ****4242 c\u200bd %20 e"
    assert scrub_bytes("k-\u200b".encode() + "\u200b".join("4242424242424242").encode()) == (
        "k-\u200b****4242".encode()
    )


def _luhn_by_the_book(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


@settings(max_examples=2000)
@given(st.text(alphabet="0123456789\uff10\uff15\u0663", min_size=1, max_size=25))
def test_the_table_luhn_check_agrees_with_the_book(digits: str) -> None:
    assert luhn_valid(digits) == _luhn_by_the_book(digits)
