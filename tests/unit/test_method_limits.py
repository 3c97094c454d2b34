"""A payment method's per-payment limit, applied by CreatePayment.create (both intakes)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from domain.accounts import Account, AccountType
from domain.errors import ErrorCode, PaygateError
from domain.method_limits import MAX_AMOUNTS, check_amount_for_method
from domain.money import Money
from domain.payments import CreatePayment


def _create(amount: Money, method: str) -> CreatePayment:
    return CreatePayment.create(
        idempotency_key="k-1",
        user_id="user-1",
        order_id="order-1",
        amount=amount,
        payment_method=method,
        payer=Account(AccountType.WALLET, "2088102177846880"),
        payee=Account(AccountType.WALLET, "2088621955183730"),
        requested_at=datetime(2026, 12, 7, tzinfo=UTC),
        metadata={},
    )


def test_an_alipay_payment_above_alipays_limit_is_refused_with_a_stable_error():
    with pytest.raises(PaygateError) as refused:
        _create(Money(100_000_000_01, "CNY"), "alipay")
    error = refused.value
    assert (error.code, error.param) == (ErrorCode.INVALID_AMOUNT, "amount")
    assert error.message == (
        "amount must be at most 100000000.00 CNY for paymentMethod alipay "
        "(the provider's limit for one payment)"
    )


def test_the_limit_itself_and_other_methods_and_currencies_are_taken():
    assert _create(Money(100_000_000_00, "CNY"), "alipay").amount.minor_units == 100_000_000_00
    assert _create(Money(100_000_000_01, "CNY"), "wallet").payment_method.value == "wallet"
    # Another currency is the adapter's refusal (unsupported_currency), not this rule's.
    check_amount_for_method("alipay", Money(10**15, "USD"))


def test_alipays_limit_is_the_one_its_simulator_enforces():
    from providers.sandbox.alipay.gateway import MAX_TRADE_FEN

    assert MAX_AMOUNTS["alipay"]["CNY"] == MAX_TRADE_FEN
