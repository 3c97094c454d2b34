"""Records a provider's word that a refund made outside paygate failed (Stripe's
``refund.failed`` for a Refund made in the Dashboard, without paygate's metadata).

The money of such a refund went back to the merchant's balance. paygate had counted it in
the payment's ``refunded_outside_minor`` (from ``charge.refunded``) and so refused to
refund that part; left unread, the payer could not be refunded what is still owed until an
operator settled it. The store takes back what was counted of it, once, and keeps the
failure by the provider's refund id and the provider's times of the refund and its
failure, so a replay changes nothing, a reading of the charge's refunded total made while
the refund stood does not count it again, and one made after the failure is taken whole
(persistence.outside_refund_failed, domain.failed_refund_netting).

Answers: ``recorded`` (taken back, with the payment's result event; or noted, nothing of
it counted yet), ``already`` (a replay), ``ignored`` (the id is one of paygate's own
refunds, whose failure reaches paygate with its metadata: consumer.refund_notices),
``unknown`` (no payment stands on the charge: another system's on the same account; or
its payment ended uncaptured), ``busy`` (the payment is not recorded captured yet: the
provider sends it again), ``mismatch`` (another currency, more than was captured, the
refund id recorded for another payment or amount): nothing changes but the first two.
"""

from __future__ import annotations

import logging

from consumer.payment_events import PaymentEvents
from consumer.ports import ProviderRefundRecords
from domain.events import outside_refund_failed_event_id
from domain.payment_view import PaymentView
from persistence.outbox import OutboxMessage
from persistence.outside_refund_failed import OutsideFailure
from providers.notices import NoticeResult, OutsideRefundFailedNotice

log = logging.getLogger("paygate.notifications")

_ANSWERS: dict[OutsideFailure, NoticeResult] = {
    OutsideFailure.TAKEN_BACK: NoticeResult.RECORDED,
    OutsideFailure.NOTED: NoticeResult.RECORDED,
    OutsideFailure.ALREADY: NoticeResult.ALREADY,
    OutsideFailure.OWN: NoticeResult.IGNORED,
    OutsideFailure.NOT_CAPTURED: NoticeResult.BUSY,
    OutsideFailure.UNKNOWN: NoticeResult.UNKNOWN,
    OutsideFailure.MISMATCH: NoticeResult.MISMATCH,
}


class OutsideRefundFailures:
    def __init__(self, *, store: ProviderRefundRecords, events: PaymentEvents) -> None:
        self._store = store
        self._events = events

    async def record(self, notice: OutsideRefundFailedNotice) -> NoticeResult:
        def event(stored: PaymentView) -> OutboxMessage:
            return self._events.of_payment(
                stored,
                event_id=outside_refund_failed_event_id(
                    stored.payment_request_id, notice.provider_reference
                ),
            )

        result, stored = await self._store.outside_refund_failed(
            provider=notice.provider,
            provider_reference=notice.provider_reference,
            charge_reference=notice.charge_reference,
            amount=notice.amount,
            event=event,
            made_at=notice.made_at,
            failed_at=notice.failed_at,
        )
        about = {
            "provider": notice.provider,
            "provider_reference": notice.provider_reference,
            "charge_reference": notice.charge_reference,
            "amount_minor": notice.amount.minor_units,
            "result": result.value,
        }
        if stored is not None:
            log.warning(
                "a refund made outside paygate failed at the provider: what was counted of it "
                "taken back from the payment's refunded total; refundable through paygate again",
                extra={
                    **about,
                    "payment_request_id": stored.payment_request_id,
                    "status": stored.status.value,
                    "refunded_minor": stored.refunded_minor,
                },
            )
        else:
            log.log(
                logging.WARNING if result is OutsideFailure.MISMATCH else logging.INFO,
                "provider notification of a failed refund made outside paygate: %s",
                result.value,
                extra=about,
            )
        return _ANSWERS[result]
