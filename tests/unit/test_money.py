from decimal import Decimal

import pytest

from domain.errors import ErrorCode, PaygateError
from domain.money import MAX_MINOR_UNITS, Money, money_from_decimal, money_from_text

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("10.50", "USD", 1050),
        ("10.5", "USD", 1050),
        ("0.01", "EUR", 1),
        ("1000", "JPY", 1000),
        ("1.234", "BHD", 1234),
        ("0.0001", "CLF", 1),
        ("19.99", "GBP", 1999),
        ("10000000000000", "USD", MAX_MINOR_UNITS),
    ],
)
def test_parses_exact_decimal_text_to_minor_units(text, currency, minor):
    assert money_from_text(text, currency) == Money(minor, currency)


@pytest.mark.parametrize(
    "amount",
    [
        0.1,
        1e2,
        19.999999999999999,
        10,
        "1e2",
        "1E2",
        "-1.00",
        "+1.00",
        " 1.00",
        "1.00 ",
        "1,00",
        ".5",
        "5.",
        "01.00",
        "NaN",
        "Infinity",
        "",
        None,
        True,
    ],
)
def test_refuses_anything_but_plain_decimal_text(amount):
    with pytest.raises(PaygateError) as caught:
        money_from_text(amount, "USD")
    assert caught.value.code is ErrorCode.INVALID_AMOUNT
    assert caught.value.param == "amount"


@pytest.mark.parametrize(
    ("text", "currency"),
    [("10.001", "USD"), ("1.5", "JPY"), ("1.2345", "BHD"), ("0.001", "EUR")],
)
def test_refuses_more_decimals_than_the_currency_has(text, currency):
    with pytest.raises(PaygateError) as caught:
        money_from_text(text, currency)
    assert caught.value.code is ErrorCode.INVALID_AMOUNT
    assert currency in caught.value.message


@pytest.mark.parametrize("text", ["0", "0.00", "0.0"])
def test_refuses_zero(text):
    with pytest.raises(PaygateError) as caught:
        money_from_text(text, "USD")
    assert caught.value.code is ErrorCode.INVALID_AMOUNT


def test_refuses_amounts_beyond_the_limit():
    with pytest.raises(PaygateError) as caught:
        money_from_text("10000000000000.01", "USD")
    assert caught.value.code is ErrorCode.INVALID_AMOUNT


@pytest.mark.parametrize("currency", ["XYZ", "usd", "US", "", None, "XAU", "XDR", 840])
def test_refuses_unknown_currencies(currency):
    with pytest.raises(PaygateError) as caught:
        money_from_text("1.00", currency)
    assert caught.value.code is ErrorCode.UNSUPPORTED_CURRENCY
    assert caught.value.param == "currency"


def test_decimal_with_trailing_zeros_from_avro_is_exact():
    # Avro's decimal(scale=4) delivers 10.5000 for 10.50.
    assert money_from_decimal(Decimal("10.5000"), "USD") == Money(1050, "USD")
    with pytest.raises(PaygateError):
        money_from_decimal(Decimal("10.5050"), "USD")
    with pytest.raises(PaygateError):
        money_from_decimal(Decimal("-1.0000"), "USD")
    with pytest.raises(PaygateError):
        money_from_decimal(Decimal("NaN"), "USD")


def test_to_decimal_has_exactly_the_currency_exponent():
    assert str(Money(1050, "USD").to_decimal()) == "10.50"
    assert str(Money(1000, "JPY").to_decimal()) == "1000"
    assert str(Money(1, "BHD").to_decimal()) == "0.001"
    assert str(Money(1050, "USD")) == "10.50 USD"


def test_money_itself_refuses_invalid_values():
    with pytest.raises(PaygateError):
        Money(0, "USD")
    with pytest.raises(PaygateError):
        Money(1, "XYZ")
