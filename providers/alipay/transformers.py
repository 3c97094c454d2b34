"""Alipay's request and answer shapes, and exhaustive maps from its statuses and codes to ours.

Amounts: Alipay takes and answers CNY in yuan, as a decimal string with two places
(``"10.50"``); paygate holds minor units (fen). Both directions are exact (``Decimal``),
and an answer whose amount is not the attempt's is refused, never rounded.

Gateway answers carry ``code``: ``10000`` success; ``20000`` service unavailable, and
``40004`` business failure with an ``ACQ.*`` ``sub_code``; ``40001``/``40002`` mean our
request was malformed or its signature wrong (nothing was done).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from domain.errors import ErrorCode, PaygateError
from domain.money import Money
from domain.next_action import NextAction, NextActionType
from providers.port import ChargeOutcome, ChargeStatus, ProviderRefundStatus, RefundOutcome

CURRENCY: Final = "CNY"
SUCCESS: Final = "10000"
UNAVAILABLE: Final = "20000"
BUSINESS_FAILURE: Final = "40004"
# Our request was refused before anything was done (missing or invalid parameter,
# invalid signature): resending the same request cannot succeed.
REQUEST_REFUSED: Final = frozenset({"40001", "40002", "40006"})
TRADE_NOT_EXIST: Final = "ACQ.TRADE_NOT_EXIST"
# Business failures that say nothing about the outcome: ask again.
UNKNOWN_OUTCOME_SUB_CODES: Final = frozenset({"ACQ.SYSTEM_ERROR", "ACQ.TRADE_HAS_CLOSE_PENDING"})
# precreate's business refusals (40004) of the request itself: Alipay opens no trade, and
# the same request is refused every time (an amount above its limit, a subject with a
# forbidden word, parameters it refuses, an app not allowed the product). The payment is
# declined: read as "outcome unknown" it stayed pending, re-sent and refused for ever.
# Only these: a code about a trade already under the key (ACQ.TRADE_HAS_SUCCESS,
# ACQ.TRADE_HAS_CLOSE, ACQ.CONTEXT_INCONSISTENT), ACQ.SYSTEM_ERROR, and any code not listed
# stay "outcome unknown", settled by the query.
TRADE_REFUSED_SUB_CODES: Final = frozenset(
    {
        "ACQ.TOTAL_FEE_EXCEED",
        "ACQ.EXIST_FORBIDDEN_WORD",
        "ACQ.INVALID_PARAMETER",
        "ACQ.ACCESS_FORBIDDEN",
        "ACQ.PARTNER_ERROR",
    }
)
# Alipay's times are Beijing time; a fixed offset, since China keeps no daylight saving time.
BEIJING: Final = timezone(timedelta(hours=8), "Asia/Shanghai")


class TradeStatus(StrEnum):
    WAIT_BUYER_PAY = "WAIT_BUYER_PAY"
    TRADE_SUCCESS = "TRADE_SUCCESS"
    TRADE_FINISHED = "TRADE_FINISHED"  # paid, and no refund possible any more
    TRADE_CLOSED = "TRADE_CLOSED"  # closed unpaid, or paid and fully refunded


# Exhaustive over TradeStatus (a unit test checks). TRADE_CLOSED is decided by
# :func:`charge_outcome` (a closed trade that was paid is a charge refunded in full:
# :func:`paid_then_refunded`).
CHARGE_STATUSES: Final[Mapping[TradeStatus, ChargeStatus]] = MappingProxyType(
    {
        TradeStatus.WAIT_BUYER_PAY: ChargeStatus.REQUIRES_ACTION,
        TradeStatus.TRADE_SUCCESS: ChargeStatus.SUCCEEDED,
        TradeStatus.TRADE_FINISHED: ChargeStatus.SUCCEEDED,
        TradeStatus.TRADE_CLOSED: ChargeStatus.EXPIRED,
    }
)


def yuan(amount: Money) -> str:
    """Minor units as Alipay's yuan string; raises PaygateError for another currency."""
    if amount.currency != CURRENCY:
        raise PaygateError(
            ErrorCode.UNSUPPORTED_CURRENCY, "Alipay takes CNY only", param="currency"
        )
    return format(Decimal(amount.minor_units).scaleb(-2), ".2f")


def minor_units(text: object) -> int:
    """Alipay's yuan string as fen; raises ValueError if it is not an exact amount."""
    try:
        value = Decimal(str(text))
    except InvalidOperation:
        raise ValueError("the amount is not a decimal") from None
    fen = value.scaleb(2)
    if not value.is_finite() or fen != fen.to_integral_value():
        raise ValueError("the amount is not a whole number of fen")
    return int(fen)


def time_expire(now: datetime, ttl_s: float) -> tuple[datetime, str]:
    """When the payer's time is up, and that moment as Alipay's ``time_expire`` text
    (Beijing time, ``yyyy-MM-dd HH:mm:ss``)."""
    at = (now + timedelta(seconds=ttl_s)).replace(microsecond=0)
    beijing = at.astimezone(BEIJING)
    return at, beijing.strftime("%Y-%m-%d %H:%M:%S")


def trade_content(
    attempt_key: str, amount: Money, subject: str, expires: str, product_code: str
) -> dict[str, object]:
    """The biz_content of precreate and page.pay. ``out_trade_no`` is the attempt key, so a
    resend of the attempt is the same trade, never a second one."""
    return {
        "out_trade_no": attempt_key,
        "total_amount": yuan(amount),
        "subject": subject,
        "product_code": product_code,
        "time_expire": expires,
    }


def charge_outcome(answer: Mapping[str, Any], amount_minor: int | None) -> ChargeOutcome:
    """A trade.query answer (code 10000) as a charge outcome; ``amount_minor``, when known,
    must be the trade's total. Raises ValueError for an answer it cannot read."""
    try:
        status = TradeStatus(str(answer.get("trade_status")))
    except ValueError:
        raise ValueError("unknown trade_status") from None
    trade_no = answer.get("trade_no")
    reference = trade_no if isinstance(trade_no, str) and trade_no else None
    if (
        amount_minor is not None
        and "total_amount" in answer
        and minor_units(answer["total_amount"]) != amount_minor
    ):
        raise ValueError("the trade's amount is not the attempt's")
    if status is TradeStatus.TRADE_CLOSED and answer.get("send_pay_date"):
        return paid_then_refunded(reference)
    return ChargeOutcome(CHARGE_STATUSES[status], reference)


def paid_then_refunded(reference: str | None) -> ChargeOutcome:
    """A TRADE_CLOSED trade with a payment date (the query's ``send_pay_date``, the
    notification's ``gmt_payment``): Alipay closes a paid trade only once it is refunded in
    full. The charge happened, and nothing of it is kept: neither ``succeeded`` (money
    kept) nor ``expired`` (never paid) would be true."""
    return ChargeOutcome(ChargeStatus.SUCCEEDED, reference, refunded_in_full=True)


def trade_refused(answer: Mapping[str, Any]) -> ChargeOutcome | None:
    """A precreate answer that refuses to open the trade (:data:`TRADE_REFUSED_SUB_CODES`)
    as a declined charge, its sub code the ``decline_code``; None for any other answer."""
    sub_code = answer.get("sub_code")
    if answer.get("code") != BUSINESS_FAILURE or sub_code not in TRADE_REFUSED_SUB_CODES:
        return None
    return ChargeOutcome(
        ChargeStatus.DECLINED,
        None,
        PaygateError(
            ErrorCode.PAYMENT_DECLINED,
            f"Alipay refused to open the trade: {answer.get('sub_msg') or sub_code}",
            decline_code=str(sub_code),
        ),
    )


def qr_action(qr_code: object, expires_at: datetime) -> NextAction:
    if not isinstance(qr_code, str) or not qr_code:
        raise ValueError("precreate answered no qr_code")
    return NextAction.of(NextActionType.QR_CODE, qr_code, expires_at)


# trade.refund's fund_change: Y, the money moved with this call. Anything else (N for a
# repeat of a refund already made, or for one not made yet) is settled by the refund query.
FUND_MOVED: Final = "Y"


def refund_outcome(answer: Mapping[str, Any], refund_key: str) -> RefundOutcome:
    """A trade.refund answer (code 10000) whose ``fund_change`` is Y: the money moved."""
    trade_no = answer.get("trade_no")
    reference = f"{trade_no}:{refund_key}" if isinstance(trade_no, str) else refund_key
    return RefundOutcome(ProviderRefundStatus.SUCCEEDED, reference)


# fastpay.refund.query's refund_status: REFUND_SUCCESS once the refund is made. Alipay's
# documentation of alipay.trade.fastpay.refund.query
# (https://docs.open.alipay.com/api_1/alipay.trade.fastpay.refund.query, and its newer
# edition): code 10000 only says the query ran; a refund_status other than REFUND_SUCCESS,
# or none, means the refund was not made (not received, or failed), and the merchant may
# call alipay.trade.refund again, "with the same out_request_no and amount, so that nothing
# is refunded twice". A query too soon after the refund (under 10 s) may find it not made
# yet and made later: the re-send under the same out_request_no is then answered as the
# repeat it is (fund_change N), never a second refund.
REFUND_SUCCESS: Final = "REFUND_SUCCESS"


def refund_query_outcome(answer: Mapping[str, Any], refund_key: str) -> RefundOutcome | None:
    """Succeeded on ``REFUND_SUCCESS``; None for anything else: no refund fields (Alipay
    knows no refund under the key), or a refund without ``REFUND_SUCCESS`` (not made).

    None is "the provider holds no refund under the key", which the refund handler settles
    by sending the refund again under the same ``out_request_no``: Alipay's idempotency for
    refunds of one trade makes that one refund, whether the first call failed, never
    arrived, or is made meanwhile. Read as pending instead, such a refund was asked about
    at every pass and never sent again: its amount stayed reserved for good if it had
    failed."""
    trade_no = answer.get("trade_no")
    reference = f"{trade_no}:{refund_key}" if isinstance(trade_no, str) else refund_key
    if answer.get("refund_status") == REFUND_SUCCESS:
        return RefundOutcome(ProviderRefundStatus.SUCCEEDED, reference)
    return None


def refund_failure(answer: Mapping[str, Any]) -> RefundOutcome:
    sub_code = str(answer.get("sub_code") or "")
    return RefundOutcome(
        ProviderRefundStatus.FAILED,
        None,
        PaygateError(
            ErrorCode.REFUND_FAILED,
            f"Alipay refused the refund: {answer.get('sub_msg') or sub_code}",
            decline_code=sub_code or None,
        ),
    )
