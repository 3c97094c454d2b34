"""Stripe's amount rules (providers/stripe/amounts.py): every zero-decimal currency and every
special case, for charge, capture and refund requests and for Stripe's answers; and amounts
Stripe cannot take exactly, refused before any call (a fake HTTP client records none)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

import pytest
import stripe

from domain.accounts import Account, AccountType
from domain.currencies import CURRENCY_EXPONENTS
from domain.errors import ErrorCode, PaygateError
from domain.money import Money, money_from_text
from domain.payments import PaymentMethod
from providers.errors import ProviderTimeoutError
from providers.port import (
    CaptureRequest,
    ChargeRequest,
    ChargeStatus,
    ProviderRefundStatus,
    RefundRequest,
)
from providers.stripe import StripeProvider
from providers.stripe.amounts import (
    SPECIAL_CASES,
    STRIPE_SCALES,
    THREE_DECIMAL_CURRENCIES,
    TWO_DECIMAL,
    ZERO_DECIMAL_CURRENCIES,
    StripeAmountError,
    StripeScale,
    check_answered_amount,
    money_from_stripe,
    stripe_scale,
    to_stripe_amount,
)
from providers.stripe.refund_transformers import capture_params, refund_params
from providers.stripe.transformers import charge_params
from tests.support.builders import PAYEE_IBAN

pytestmark = pytest.mark.unit

# Stripe's "Zero-decimal currencies" list, as the page shows it.
STRIPE_ZERO_DECIMAL_LIST = "BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF".split()
# Zero-decimal at Stripe and in ISO 4217: the amount goes through unchanged.
ZERO_DECIMAL_BOTH = sorted(set(STRIPE_ZERO_DECIMAL_LIST) - {"MGA", "UGX"})

# (decimal text as a client sends it, currency, Stripe's amount): one row per rule.
CONVERTED = [
    ("10.50", "EUR", 1050),  # two-decimal, the default
    ("10.00", "MGA", 10),  # zero-decimal at Stripe, two decimals in ISO 4217
    ("1234", "MGA", 1234),
    ("5", "ISK", 500),  # special case: whole krónur written with two decimals
    ("12345", "ISK", 1234500),
    ("5", "UGX", 500),  # special case, though also on the zero-decimal list
    ("10.45", "HUF", 1045),  # special case for payouts only: charges are two-decimal
    ("800.45", "TWD", 80045),  # likewise
    ("5.120", "KWD", 5120),  # three-decimal, last digit 0
    ("3", "UYI", 300),  # not named by Stripe: two-decimal, whatever ISO says
]

# (decimal text, currency, what the refusal says): no exact Stripe amount exists.
REFUSED = [
    ("10.50", "MGA", "in whole units only"),
    ("0.01", "MGA", "in whole units only"),
    ("5.124", "KWD", "only in multiples of 0.010 KWD"),
    ("0.001", "BHD", "only in multiples of 0.010 BHD"),
    ("1.2345", "CLF", "with at most 2 decimals"),
    ("1.235", "IQD", "with at most 2 decimals"),
]


def money(amount: str, currency: str) -> Money:
    return money_from_text(amount, currency)


def charge_request(amount: Money) -> ChargeRequest:
    return ChargeRequest(
        attempt_key="pay-1-a1",
        payment_request_id="pay-1",
        amount=amount,
        payment_method=PaymentMethod.CARD,
        payer=Account(AccountType.TOKEN, "pm_card_visa"),
        payee=Account(AccountType.IBAN, PAYEE_IBAN),
    )


def capture_request(amount: Money) -> CaptureRequest:
    return CaptureRequest("pay-1-capture", "pay-1", "pi_123", amount)


def refund_request(amount: Money) -> RefundRequest:
    return RefundRequest("pay-1-refund-1", "ref_1", "pay-1", "pi_123", amount)


# --- the rule table -------------------------------------------------------------------------


def test_paygate_knows_every_currency_on_stripes_zero_decimal_list() -> None:
    assert set(STRIPE_ZERO_DECIMAL_LIST) == ZERO_DECIMAL_CURRENCIES
    assert set(CURRENCY_EXPONENTS) >= ZERO_DECIMAL_CURRENCIES


def test_the_special_cases_are_the_four_stripe_lists() -> None:
    assert {
        "ISK": StripeScale(2, multiple_of=100),
        "HUF": TWO_DECIMAL,
        "TWD": TWO_DECIMAL,
        "UGX": StripeScale(2, multiple_of=100),
    } == SPECIAL_CASES


def test_every_currency_has_exactly_the_scale_of_its_rule() -> None:
    for code in CURRENCY_EXPONENTS:
        scale = stripe_scale(code)
        if code in SPECIAL_CASES:
            assert scale == SPECIAL_CASES[code]
        elif code in ZERO_DECIMAL_CURRENCIES:
            assert scale == StripeScale(0)
        elif code in THREE_DECIMAL_CURRENCIES:
            assert scale == StripeScale(3, multiple_of=10)
        else:
            assert scale == TWO_DECIMAL
            assert code not in STRIPE_SCALES


# --- requests: charge, capture, refund ------------------------------------------------------


def amounts_sent(amount: Money) -> tuple[object, object, object]:
    """What the charge, capture and refund requests would send for ``amount``."""
    return (
        charge_params(charge_request(amount))["amount"],
        capture_params(capture_request(amount))["amount_to_capture"],
        refund_params(refund_request(amount))["amount"],
    )


@pytest.mark.parametrize("currency", ZERO_DECIMAL_BOTH)
def test_a_zero_decimal_currency_is_sent_as_it_is(currency: str) -> None:
    assert amounts_sent(Money(500, currency)) == (500, 500, 500)
    assert charge_params(charge_request(Money(500, currency)))["currency"] == currency.lower()


@pytest.mark.parametrize(("text", "currency", "expected"), CONVERTED)
def test_each_rule_converts_charges_captures_and_refunds_alike(
    text: str, currency: str, expected: int
) -> None:
    assert to_stripe_amount(money(text, currency)) == expected
    assert amounts_sent(money(text, currency)) == (expected, expected, expected)


def test_mga_is_sent_in_whole_ariary_not_iso_minor_units() -> None:
    # The bug this module fixes: 10.00 MGA is 1000 ISO minor units, and Stripe charged 1000 MGA.
    assert Money(1000, "MGA") == money("10.00", "MGA")
    assert amounts_sent(Money(1000, "MGA")) == (10, 10, 10)


@pytest.mark.parametrize("currency", ["ISK", "UGX"])
def test_every_whole_isk_or_ugx_amount_is_a_multiple_of_100(currency: str) -> None:
    for units in (1, 7, 99, 101, 10**6 + 1):
        sent = to_stripe_amount(Money(units, currency))
        assert (sent, sent % 100) == (units * 100, 0)


@pytest.mark.parametrize(("text", "currency", "why"), REFUSED)
def test_an_amount_stripe_cannot_take_exactly_is_refused(
    text: str, currency: str, why: str
) -> None:
    for build in (
        lambda m: charge_params(charge_request(m)),
        lambda m: capture_params(capture_request(m)),
        lambda m: refund_params(refund_request(m)),
    ):
        with pytest.raises(StripeAmountError) as caught:
            build(money(text, currency))
        error = caught.value
        assert isinstance(error, PaygateError)
        assert (error.code, error.param) == (ErrorCode.INVALID_AMOUNT, "amount")
        assert not error.spec.retryable
        assert why in error.message
        assert f"{text} {currency}" in error.message


# --- answers: reading Stripe's amounts back -------------------------------------------------


@pytest.mark.parametrize("currency", ZERO_DECIMAL_BOTH)
def test_a_zero_decimal_answer_reads_as_it_is(currency: str) -> None:
    assert money_from_stripe(500, currency.lower()) == Money(500, currency)


@pytest.mark.parametrize(("text", "currency", "stripe_amount"), CONVERTED)
def test_each_rule_reads_stripes_amount_back_exactly(
    text: str, currency: str, stripe_amount: int
) -> None:
    assert money_from_stripe(stripe_amount, currency.lower()) == money(text, currency)


@pytest.mark.parametrize("code", sorted(CURRENCY_EXPONENTS))
def test_every_amount_sent_reads_back_as_itself(code: str) -> None:
    exponent = CURRENCY_EXPONENTS[code]
    for minor in (10**exponent, 10 ** (exponent + 3) * 7, 10**15):
        sent = to_stripe_amount(Money(minor, code))
        assert money_from_stripe(sent, code.lower()) == Money(minor, code)


@pytest.mark.parametrize(
    ("amount", "currency", "why"),
    [
        (1050, "isk", "no exact ISO 4217 equivalent"),  # ten and a half krónur
        (1001, "ugx", "no exact ISO 4217 equivalent"),
        (0, "eur", "no positive amount"),
        (-5, "eur", "no positive amount"),
        (True, "eur", "no positive amount"),
        ("1050", "eur", "no positive amount"),
        (None, "eur", "no positive amount"),
        (1050, "xyz", "does not know"),
        (1050, None, "no currency"),
        (10**16, "eur", "out of paygate's range"),
    ],
)
def test_an_answer_that_is_no_paygate_amount_is_unreadable(
    amount: object, currency: object, why: str
) -> None:
    with pytest.raises(ValueError, match=why):
        money_from_stripe(amount, currency)


def test_an_answer_restating_another_amount_does_not_pass() -> None:
    check_answered_amount(Money(1000, "MGA"), 10, "mga")
    with pytest.raises(ValueError, match=re.escape("1000.00 MGA, not the 10.00 MGA asked")):
        check_answered_amount(Money(1000, "MGA"), 1000, "mga")
    with pytest.raises(ValueError, match="not the"):
        check_answered_amount(Money(1000, "EUR"), 1000, "usd")


# --- through the adapter and the real SDK, with a fake HTTP client --------------------------


class FakeStripeHttp(stripe.HTTPClient):
    """Answers each request with the next canned (status, body); records what was sent."""

    name = "fake"

    def __init__(self, *answers: tuple[int, Mapping[str, Any]]) -> None:
        super().__init__()
        self.answers = list(answers)
        self.requests: list[tuple[str, str, Mapping[str, str], Any]] = []

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        self.requests.append((method, url, dict(headers), post_data))
        status, body = self.answers.pop(0)
        return json.dumps(body).encode(), status, {"request-id": "req_fake"}


async def answering(*answers: tuple[int, Mapping[str, Any]]) -> tuple[StripeProvider, Any]:
    http = FakeStripeHttp(*answers)
    provider = StripeProvider("sk_test_unit", http_client=http)
    await provider.start()
    return provider, http


def intent_body(amount: int, currency: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": "pi_123",
        "object": "payment_intent",
        "status": "succeeded",
        "amount": amount,
        "amount_received": amount,
        "currency": currency,
        **fields,
    }


def refund_body(amount: int, currency: str) -> dict[str, Any]:
    return {
        "id": "re_123",
        "object": "refund",
        "status": "succeeded",
        "amount": amount,
        "currency": currency,
    }


SPECIAL = [
    ("10.00", "MGA", 10),
    ("5", "ISK", 500),
    ("5", "UGX", 500),
    ("10.45", "HUF", 1045),
    ("800.45", "TWD", 80045),
    ("500", "JPY", 500),
]


@pytest.mark.parametrize(("text", "currency", "stripe_amount"), SPECIAL)
async def test_a_charge_sends_and_reads_stripes_amount(
    text: str, currency: str, stripe_amount: int
) -> None:
    provider, http = await answering((200, intent_body(stripe_amount, currency.lower())))
    outcome = await provider.charge(charge_request(money(text, currency)))
    assert outcome.status is ChargeStatus.SUCCEEDED
    sent = parse_qs(http.requests[0][3])
    assert (sent["amount"], sent["currency"]) == ([str(stripe_amount)], [currency.lower()])


@pytest.mark.parametrize(("text", "currency", "stripe_amount"), SPECIAL)
async def test_a_capture_sends_stripes_amount_to_capture(
    text: str, currency: str, stripe_amount: int
) -> None:
    provider, http = await answering((200, intent_body(stripe_amount, currency.lower())))
    outcome = await provider.capture(capture_request(money(text, currency)))
    assert outcome.status is ChargeStatus.SUCCEEDED
    assert parse_qs(http.requests[0][3])["amount_to_capture"] == [str(stripe_amount)]


@pytest.mark.parametrize(("text", "currency", "stripe_amount"), SPECIAL)
async def test_a_refund_sends_and_reads_stripes_amount(
    text: str, currency: str, stripe_amount: int
) -> None:
    provider, http = await answering((200, refund_body(stripe_amount, currency.lower())))
    outcome = await provider.refund(refund_request(money(text, currency)))
    assert outcome.status is ProviderRefundStatus.SUCCEEDED
    assert parse_qs(http.requests[0][3])["amount"] == [str(stripe_amount)]


@pytest.mark.parametrize(("text", "currency", "why"), REFUSED)
async def test_a_refused_amount_makes_no_call_for_any_operation(
    text: str, currency: str, why: str
) -> None:
    provider, http = await answering()  # any call would find no answer and fail otherwise
    amount = money(text, currency)
    for call in (
        provider.charge(charge_request(amount)),
        provider.capture(capture_request(amount)),
        provider.refund(refund_request(amount)),
    ):
        with pytest.raises(PaygateError) as caught:
            await call
        assert caught.value.code is ErrorCode.INVALID_AMOUNT
        assert why in caught.value.message
    assert http.requests == []


async def test_a_charge_answered_for_another_amount_is_an_unknown_outcome() -> None:
    # What Stripe would answer had it charged ISO minor units: 1000 MGA for 10.00 MGA.
    provider, _ = await answering((200, intent_body(1000, "mga")))
    with pytest.raises(ProviderTimeoutError, match=re.escape("not the 10.00 MGA asked")) as caught:
        await provider.charge(charge_request(money("10.00", "MGA")))
    assert caught.value.outcome_unknown


async def test_a_refund_answered_for_another_amount_is_an_unknown_outcome() -> None:
    provider, _ = await answering((200, refund_body(80045, "twd")))
    with pytest.raises(ProviderTimeoutError, match=re.escape("not the 800.00 TWD asked")) as caught:
        await provider.refund(refund_request(money("800.00", "TWD")))
    assert caught.value.outcome_unknown


async def test_an_answer_without_an_amount_is_an_unknown_outcome() -> None:
    body = {"id": "pi_123", "object": "payment_intent", "status": "succeeded"}
    provider, _ = await answering((200, body))
    with pytest.raises(ProviderTimeoutError, match="unreadable"):
        await provider.charge(charge_request(money("10.50", "EUR")))
