"""Alipay's asynchronous notifications: verified through the SDK, read as a ChargeNotice.

Alipay posts a form (``notify_type=trade_status_sync``) signed over every parameter but
``sign`` and ``sign_type``. Only a notification whose signature the SDK verifies against
Alipay's public key, and whose ``app_id`` is ours, is read; anything else raises
:class:`NoticeRefusedError`. Alipay sends a notification again until it is answered
exactly ``success``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from domain.money import Money
from providers.alipay import transformers as t
from providers.alipay.signing import verify_notification
from providers.notices import (
    ChargeNotice,
    NoticeRefusedError,
    NotificationTerms,
    ReceivedNotification,
    RefusalReason,
)
from providers.port import ChargeOutcome, ChargeStatus

# What Alipay wants as the answer to a notification it need not send again.
ACKNOWLEDGED: Final = "success"

# A form, answered exactly ``success`` (text); a refusal names the signature's field.
ALIPAY_TERMS: Final = NotificationTerms(
    media_type="application/x-www-form-urlencoded",
    acknowledgement=ACKNOWLEDGED,
    acknowledgement_type="text/plain",
    signature_param="sign",
    attempt_key_param="out_trade_no",
)

_FINISHED: Final = {
    t.TradeStatus.TRADE_SUCCESS: ChargeStatus.SUCCEEDED,
    t.TradeStatus.TRADE_FINISHED: ChargeStatus.SUCCEEDED,
    t.TradeStatus.TRADE_CLOSED: ChargeStatus.EXPIRED,
}


class AlipayNotifications:
    def __init__(self, *, app_id: str, alipay_public_key: str, provider: str = "alipay") -> None:
        self._app_id = app_id
        self._public_key = alipay_public_key
        self.provider = provider
        self.terms = ALIPAY_TERMS

    def receive(self, notification: ReceivedNotification) -> ChargeNotice:
        return self.read(notification.form)

    def read(self, params: Mapping[str, str]) -> ChargeNotice:
        if not verify_notification(params, self._public_key):
            raise NoticeRefusedError(
                "the notification is not signed by Alipay", RefusalReason.SIGNATURE
            )
        if params.get("app_id") != self._app_id:
            raise NoticeRefusedError("the notification is for another app", RefusalReason.ACCOUNT)
        attempt_key = params.get("out_trade_no") or ""
        try:
            status = t.TradeStatus(params.get("trade_status", ""))
            amount = Money(t.minor_units(params.get("total_amount")), t.CURRENCY)
            refunded = _refunded(params)
        except ValueError as exc:
            raise NoticeRefusedError(f"unreadable notification: {exc}") from None
        if not attempt_key:
            raise NoticeRefusedError("the notification names no out_trade_no")
        charge_status = _FINISHED.get(status)
        reference = params.get("trade_no") or None
        outcome = None if charge_status is None else ChargeOutcome(charge_status, reference)
        if charge_status is ChargeStatus.SUCCEEDED and refunded is not None:
            # Paid, and refunded in part since (by paygate or in Alipay's merchant portal).
            outcome = ChargeOutcome(charge_status, reference, refunded=refunded)
        if charge_status is ChargeStatus.EXPIRED and params.get("gmt_payment"):
            outcome = t.paid_then_refunded(reference)  # closed after a full refund: paid
        return ChargeNotice(self.provider, attempt_key, outcome, amount)


def _refunded(params: Mapping[str, str]) -> Money | None:
    """What the trade's refunds returned in all (``refund_fee``, sent once a trade has
    refunds); None when the notification does not say. Raises ValueError if unreadable."""
    fee = params.get("refund_fee")
    fen = 0 if not fee else t.minor_units(fee)
    return Money(fen, t.CURRENCY) if fen > 0 else None
