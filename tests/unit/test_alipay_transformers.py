"""Alipay's shapes and maps: exact yuan amounts, exhaustive status maps, notifications read
only when signed, and the provider built from settings."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from domain.errors import ErrorCode, PaygateError
from domain.money import Money
from paygate.providers import build_provider
from paygate.settings import Settings
from providers.alipay import AlipayProvider
from providers.alipay import transformers as t
from providers.alipay.config import AlipayConfig
from providers.alipay.notifications import AlipayNotifications
from providers.notices import NoticeRefusedError
from providers.port import ChargeStatus, ProviderRefundStatus, RefundRequest
from providers.sandbox.alipay import AlipaySimulator, Rsa2Keys
from providers.sandbox.alipay.trades import Trades

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("minor", "text"), [(1, "0.01"), (1050, "10.50"), (100, "1.00"), (123456789, "1234567.89")]
)
def test_amounts_are_yuan_strings_with_two_decimals_both_ways(minor, text):
    assert t.yuan(Money(minor, "CNY")) == text
    assert t.minor_units(text) == minor


@pytest.mark.parametrize("text", ["1.005", "abc", "NaN", "Infinity", ""])
def test_an_inexact_amount_is_refused_not_rounded(text):
    with pytest.raises(ValueError, match="amount"):
        t.minor_units(text)


def test_another_currency_is_refused_before_any_call():
    with pytest.raises(PaygateError) as caught:
        t.yuan(Money(1050, "EUR"))
    assert caught.value.code is ErrorCode.UNSUPPORTED_CURRENCY


def test_every_trade_status_maps():
    assert set(t.CHARGE_STATUSES) == set(t.TradeStatus)
    assert t.charge_outcome({"trade_status": "TRADE_CLOSED"}, None).status is ChargeStatus.EXPIRED
    refunded = {"trade_status": "TRADE_CLOSED", "send_pay_date": "2026-01-01 00:00:00"}
    paid_then_refunded = t.charge_outcome(refunded, None)
    assert (paid_then_refunded.status, paid_then_refunded.refunded_in_full) == (
        ChargeStatus.SUCCEEDED,
        True,
    )
    with pytest.raises(ValueError, match="trade_status"):
        t.charge_outcome({"trade_status": "PAID_MAYBE"}, None)
    with pytest.raises(ValueError, match="amount"):
        t.charge_outcome({"trade_status": "TRADE_SUCCESS", "total_amount": "9.99"}, 1000)


def test_the_simulators_statuses_are_alipays():
    from providers.sandbox.alipay.trades import TradeStatus as Simulated

    assert {s.value for s in Simulated} <= {s.value for s in t.TradeStatus}


@pytest.fixture(scope="module")
def alipay_keys() -> Rsa2Keys:
    return Rsa2Keys.generate()


def test_a_notification_is_read_only_when_alipay_signed_it_for_our_app(alipay_keys):
    simulator = AlipaySimulator(alipay_keys=alipay_keys, apps={})
    trade, _ = Trades().open(
        "app-1", "pay_1-a1", 1050, "x", None, datetime(2026, 1, 1, tzinfo=UTC), None
    )
    notice_form = simulator.notification(trade)
    reader = AlipayNotifications(app_id="app-1", alipay_public_key=alipay_keys.public_pem)
    notice = reader.read(notice_form)
    assert (notice.attempt_key, notice.amount, notice.outcome) == (
        "pay_1-a1",
        Money(1050, "CNY"),
        None,  # WAIT_BUYER_PAY: nothing to record
    )
    for bad in (
        {**notice_form, "total_amount": "0.01"},
        {k: v for k, v in notice_form.items() if k != "sign"},
        {**notice_form, "sign_type": "RSA"},
    ):
        with pytest.raises(NoticeRefusedError):
            reader.read(bad)
    other_app = AlipayNotifications(app_id="app-2", alipay_public_key=alipay_keys.public_pem)
    with pytest.raises(NoticeRefusedError, match="another app"):
        other_app.read(notice_form)


def test_the_alipay_provider_is_built_from_settings_and_needs_its_keys(alipay_keys):
    base = {"env": "development", "routes": {"alipay": ["alipay"], "*": ["sandbox-inprocess"]}}
    with pytest.raises(SystemExit, match="PAYGATE_ALIPAY_APP_ID"):
        build_provider(Settings(**base), "alipay")  # type: ignore[arg-type]
    settings = Settings(
        **base,  # type: ignore[arg-type]
        alipay_app_id="2021000000000001",
        alipay_app_private_key=SecretStr(alipay_keys.private_pem),
        alipay_public_key=alipay_keys.public_pem,
    )
    provider = build_provider(settings, "alipay")
    assert isinstance(provider, AlipayProvider)
    assert provider.name == "alipay"


_REFUND_DATA: dict[str, object] = {
    "code": "10000",
    "msg": "Success",
    "trade_no": "2026120622001400000000000001",
    "out_trade_no": "pay_0-a1",
    "out_request_no": "ref_1",
    "total_amount": "10.00",
    "refund_amount": "4.00",
}


def test_a_refund_query_is_a_success_only_when_alipay_says_refund_success():
    """fastpay.refund.query: ``refund_status`` REFUND_SUCCESS is a refund made; absent (or
    anything else), Alipay says the refund was not made (not received, or failed) and may be
    sent again under the same out_request_no: no refund under the key (None), which the
    refund handler settles by that re-send, never a refund told to the client as made."""
    made = t.refund_query_outcome({**_REFUND_DATA, "refund_status": "REFUND_SUCCESS"}, "ref_1")
    assert made is not None
    assert made.status is ProviderRefundStatus.SUCCEEDED
    assert t.refund_query_outcome(_REFUND_DATA, "ref_1") is None
    other = {**_REFUND_DATA, "refund_status": "REFUND_PROCESSING"}
    assert t.refund_query_outcome(other, "ref_1") is None
    no_refund = {
        k: v for k, v in _REFUND_DATA.items() if k not in ("refund_amount", "out_request_no")
    }
    assert t.refund_query_outcome(no_refund, "ref_1") is None


class _CannedAlipay(AlipayProvider):
    """The adapter with Alipay's verified answers canned, by response name."""

    def __init__(self, keys: Rsa2Keys, answers: dict[str, dict[str, object]]) -> None:
        super().__init__(
            AlipayConfig(
                app_id="2021000000000001",
                app_private_key=SecretStr(keys.private_pem),
                alipay_public_key=keys.public_pem,
                gateway_url="https://alipay.invalid/gateway.do",
            )
        )
        self.answers = answers
        self.asked: list[str] = []

    async def _call(self, request: object, response_name: str) -> dict[str, object]:
        self.asked.append(response_name)
        return self.answers[response_name]


async def test_a_refund_answered_without_fund_change_is_what_the_query_says(alipay_keys):
    """alipay.trade.refund: code 10000 only says the call went through; ``fund_change`` Y is
    a refund made. Another answer is checked with the refund query: a refund Alipay has not
    made (no REFUND_SUCCESS) is pending, never told to the client as made (the refund
    handler's next question finds it not made and sends it again under the same key)."""
    refund = {"code": "10000", "msg": "Success", "trade_no": _REFUND_DATA["trade_no"]}
    request = RefundRequest(
        refund_key="ref_1",
        refund_id="ref_1",
        payment_request_id="pay_0",
        charge_reference=str(_REFUND_DATA["trade_no"]),
        amount=Money(400, "CNY"),
    )
    query = "alipay_trade_fastpay_refund_query_response"
    pending = _CannedAlipay(
        alipay_keys,
        {"alipay_trade_refund_response": {**refund, "fund_change": "N"}, query: _REFUND_DATA},
    )
    assert (await pending.refund(request)).status is ProviderRefundStatus.PENDING
    assert pending.asked == ["alipay_trade_refund_response", query]
    made = _CannedAlipay(
        alipay_keys,
        {
            "alipay_trade_refund_response": {**refund, "fund_change": "N"},
            query: {**_REFUND_DATA, "refund_status": "REFUND_SUCCESS"},
        },
    )
    assert (await made.refund(request)).status is ProviderRefundStatus.SUCCEEDED
    moved = _CannedAlipay(
        alipay_keys, {"alipay_trade_refund_response": {**refund, "fund_change": "Y"}}
    )
    assert (await moved.refund(request)).status is ProviderRefundStatus.SUCCEEDED
    assert moved.asked == ["alipay_trade_refund_response"]


@pytest.mark.parametrize("sub_code", sorted(t.TRADE_REFUSED_SUB_CODES))
def test_a_precreate_refused_for_the_request_itself_is_a_decline(sub_code):
    outcome = t.trade_refused({"code": "40004", "sub_code": sub_code, "sub_msg": "no"})
    assert outcome is not None
    assert outcome.status is ChargeStatus.DECLINED
    assert outcome.provider_reference is None
    assert outcome.error is not None
    assert (outcome.error.code, outcome.error.decline_code) == (
        ErrorCode.PAYMENT_DECLINED,
        sub_code,
    )


@pytest.mark.parametrize(
    "answer",
    [
        {"code": "40004", "sub_code": "ACQ.SYSTEM_ERROR"},
        {"code": "40004", "sub_code": "ACQ.TRADE_HAS_SUCCESS"},  # a trade under the key
        {"code": "40004", "sub_code": "ACQ.TRADE_HAS_CLOSE"},
        {"code": "40004", "sub_code": "ACQ.CONTEXT_INCONSISTENT"},
        {"code": "40004", "sub_code": "ACQ.SOMETHING_NEW"},  # unknown: never a guess
        {"code": "20000", "sub_code": "ACQ.TOTAL_FEE_EXCEED"},  # only a business failure
        {"code": "40004"},
    ],
)
def test_any_other_precreate_failure_is_no_decline(answer):
    assert t.trade_refused(answer) is None
