"""Whether each refund's stored outcome follows from its payment and its order's other
refunds: the refund checks' replay (:mod:`devtools.chaos.refund_verdict`).

An order's refunds share its Kafka key, so the consumer processes them in the order they
were sent: :class:`_OrderReplay` walks them in that order. An order one of whose refunds
was also sent without that key has no order left to trust: :class:`_UnorderedOrder`
checks each outcome against the others' in any order, which still catches a refusal of a
refund that would have fitted whatever came first, or one that took more than asked.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Sequence

from devtools.chaos.evidence import RefundEventSeen
from devtools.chaos.refund_evidence import (
    FINAL_REFUND_STATUSES,
    StoredPayment,
    StoredRefund,
    StoreRefunds,
)
from devtools.chaos.refund_plan import PlannedRefund
from domain.errors import ErrorCode
from domain.status import CAPTURED

_CAPTURED = frozenset(status.value for status in CAPTURED)
_EXCEEDS = ErrorCode.REFUND_EXCEEDS_CAPTURED.value
_NOT_REFUNDABLE = ErrorCode.PAYMENT_NOT_REFUNDABLE.value
# Failures of a refund that had been reserved: the acquirer declined it, or it never
# reached the acquirer (retries used up, or abandoned by the reconciler).
_FAILED_AFTER_RESERVING = frozenset(
    {ErrorCode.REFUND_FAILED.value, ErrorCode.PROVIDER_UNAVAILABLE.value}
)


def replay_orders(
    planned: Sequence[PlannedRefund],
    store: StoreRefunds,
    events: dict[str, list[RefundEventSeen]],
    unordered: Collection[str] = (),
) -> tuple[list[str], Counter[str]]:
    """Walk each order's refunds in the order they were processed (their key's order) and
    check that every stored outcome follows from the payment and the refunds before it;
    for the ``unordered`` payments' orders, that it follows from the payment and the other
    refunds in any order.

    Returns the refunds whose outcome does not follow, and a count of the outcomes.
    """
    by_payment: defaultdict[str, list[PlannedRefund]] = defaultdict(list)
    for refund in planned:
        by_payment[refund.payment_id].append(refund)
    unexplained: list[str] = []
    outcomes: Counter[str] = Counter()
    for payment_id, refunds in by_payment.items():
        payment = store.payments.get(payment_id)
        if payment is None:
            continue  # a lost payment: reported by the payment checks
        finals = [
            (refund, ours)
            for refund in refunds
            if (ours := store.refunds.get(refund.refund_id)) is not None
            and ours.status in FINAL_REFUND_STATUSES  # lost or open: reported on their own
        ]
        order: _OrderReplay | _UnorderedOrder = (
            _UnorderedOrder(payment, [ours for _, ours in finals])
            if payment_id in unordered
            else _OrderReplay(payment)
        )
        for refund, ours in finals:
            outcomes[ours.error_code or ours.status] += 1
            problem = order.apply(refund, ours, events.get(refund.refund_id, []))
            if problem is not None:
                unexplained.append(f"{refund.refund_id} ({refund.intent.value}: {problem})")
    return unexplained, outcomes


class _OrderReplay:
    """What one order's refunds may come to, given the payment and the earlier outcomes.

    Earlier refunds that failed after being reserved may still have held their amount
    when a later one came, so what remained then lies between two bounds.
    """

    def __init__(self, payment: StoredPayment) -> None:
        self._captured = payment.amount_minor if payment.status in _CAPTURED else None
        self._succeeded = 0  # earlier refunds that succeeded
        self._held = 0  # earlier refunds reserved, then failed
        self._reserved_any = False

    def apply(
        self, refund: PlannedRefund, ours: StoredRefund, events: list[RefundEventSeen]
    ) -> str | None:
        """None when the stored outcome follows; else why not."""
        outcome = f"{ours.status} {ours.error_code or ''}".strip()
        if self._captured is None:
            if ours.error_code == _NOT_REFUNDABLE:
                return None
            return f"{outcome}, but the payment was never captured"
        most = self._captured - self._succeeded  # what remained at most
        least = most - self._held  # and at least
        wanted = refund.amount_minor
        if ours.status == "succeeded":
            amount = ours.amount_minor or 0
            self._succeeded += amount
            self._reserved_any = True
            if wanted is not None and amount != wanted:
                return f"succeeded with {amount}, {wanted} asked"
            if not 0 < amount <= most:
                return f"succeeded with {amount}, at most {most} remained"
            return None
        if ours.error_code == _EXCEEDS:
            if (wanted is None and least <= 0) or (wanted is not None and wanted > least):
                return None
            return f"refused as exceeding, yet {wanted or 'all'} of at least {least} fit"
        if ours.error_code == _NOT_REFUNDABLE:
            if self._reserved_any:
                return "refused as not refundable after an earlier refund of it was made"
            return _refused_while_uncaptured(events)
        if ours.error_code in _FAILED_AFTER_RESERVING:
            self._reserved_any = True
            self._held += ours.amount_minor or 0
            if wanted is not None and wanted > most:
                return f"reserved {wanted} when at most {most} remained"
            return None
        return f"{outcome}: not an outcome this feed can lead to"


class _UnorderedOrder:
    """What one order's refunds may come to when they may have been processed in any order.

    Each outcome is checked against the payment and the *other* refunds' outcomes: what
    remained for a refund lay between the captured amount (it came first) and the captured
    amount less every other refund that succeeded or held its amount (it came last).
    """

    def __init__(self, payment: StoredPayment, finals: Sequence[StoredRefund]) -> None:
        self._captured = payment.amount_minor if payment.status in _CAPTURED else None
        self._finals = list(finals)

    def apply(
        self, refund: PlannedRefund, ours: StoredRefund, events: list[RefundEventSeen]
    ) -> str | None:
        outcome = f"{ours.status} {ours.error_code or ''}".strip()
        if self._captured is None:
            if ours.error_code == _NOT_REFUNDABLE:
                return None
            return f"{outcome}, but the payment was never captured"
        others = [other for other in self._finals if other.refund_id != ours.refund_id]
        succeeded = sum(o.amount_minor or 0 for o in others if o.status == "succeeded")
        held = sum(o.amount_minor or 0 for o in others if o.error_code in _FAILED_AFTER_RESERVING)
        least = self._captured - succeeded - held  # what remained if it came last
        wanted = refund.amount_minor
        if ours.status == "succeeded":
            amount = ours.amount_minor or 0
            if wanted is not None and amount != wanted:
                return f"succeeded with {amount}, {wanted} asked"
            if not 0 < amount <= self._captured - succeeded:
                return f"succeeded with {amount} beside {succeeded} of {self._captured}"
            return None
        if ours.error_code == _EXCEEDS:
            if (wanted is None and least <= 0) or (wanted is not None and wanted > least):
                return None
            return f"refused as exceeding, yet {wanted or 'all'} of at least {least} fit"
        if ours.error_code == _NOT_REFUNDABLE:
            return _refused_while_uncaptured(events)
        if ours.error_code in _FAILED_AFTER_RESERVING:
            if wanted is not None and wanted > self._captured:
                return f"reserved {wanted} of a capture of {self._captured}"
            return None
        return f"{outcome}: not an outcome this feed can lead to"


def _refused_while_uncaptured(events: list[RefundEventSeen]) -> str | None:
    """A captured payment's refund may be refused as not refundable only if the payment
    was not captured yet when it came (its charge in doubt): the refusal's event tells
    the payment's status at that moment."""
    refusals = [e for e in events if e.error_code == _NOT_REFUNDABLE]
    if any(e.payment_status not in _CAPTURED for e in refusals):
        return None
    return "refused as not refundable, yet its events show the payment captured"
