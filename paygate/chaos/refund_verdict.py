"""The refund checks of a chaos run: never a double refund, never more than was captured,
none lost, every outcome announced and explained.

Three witnesses again: the acquirer's refund rows (``GET /admin/refunds``, keyed by the
refund id paygate sends as idempotency key), the store's ``refunds`` rows and payment
totals, and the RefundResult events on the results topic. A violation names the refunds
(or payments, or charges) concerned, with what each witness said.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from domain.errors import ErrorCode
from domain.status import CAPTURED, PaymentStatus
from paygate.chaos.evidence import LedgerEvidence, LedgerRefund, RefundEventSeen
from paygate.chaos.refund_evidence import (
    FINAL_REFUND_STATUSES,
    StoredPayment,
    StoredRefund,
    StoreRefunds,
)
from paygate.chaos.refund_plan import PlannedRefund, RefundIntent
from paygate.chaos.report import Verdict

_CAPTURED = frozenset(status.value for status in CAPTURED)
_EXCEEDS = ErrorCode.REFUND_EXCEEDS_CAPTURED.value
_NOT_REFUNDABLE = ErrorCode.PAYMENT_NOT_REFUNDABLE.value
# Failures of a refund that had been reserved: the acquirer declined it, or it never
# reached the acquirer (retries used up, or abandoned by the reconciler).
_FAILED_AFTER_RESERVING = frozenset(
    {ErrorCode.REFUND_FAILED.value, ErrorCode.PROVIDER_UNAVAILABLE.value}
)


@dataclass(frozen=True, slots=True)
class RefundFacts:
    planned: Sequence[PlannedRefund]  # each fed refund once, in sending order
    store: StoreRefunds  # the run's payments: their refunds and totals
    events: dict[str, list[RefundEventSeen]]  # refund id -> its RefundResult events


def judge_refunds(
    verdict: Verdict, facts: RefundFacts, ledger: LedgerEvidence, payment_ids: Sequence[str]
) -> None:
    """Add the refund figures to ``verdict`` and a violation for each broken check."""
    planned = list(facts.planned)
    stored = facts.store.refunds
    fed = {refund.refund_id for refund in planned}
    lost = [r.refund_id for r in planned if r.refund_id not in stored]
    still_open = [
        r.refund_id
        for r in planned
        if r.refund_id in stored and stored[r.refund_id].status not in FINAL_REFUND_STATUSES
    ]
    rows_per_reference = Counter(row.reference for row in ledger.refunds)
    without_event = [r.refund_id for r in planned if not facts.events.get(r.refund_id)]
    over_captured = _charges_refunded_above_capture(ledger)
    unexplained, outcomes = _replay_orders(planned, facts.store, facts.events)
    excess = [r for r in planned if r.intent is RefundIntent.EXCESS]
    excess_refused = sum(
        1
        for r in excess
        if r.refund_id in stored
        and (stored[r.refund_id].status, stored[r.refund_id].error_code) == ("failed", _EXCEEDS)
    )
    intents = Counter(r.intent for r in planned)
    verdict.rows += [
        (
            "refunds fed (partial / rest / excess)",
            f"{len(planned)} ({intents[RefundIntent.PARTIAL]} / {intents[RefundIntent.REST]}"
            f" / {intents[RefundIntent.EXCESS]})",
            "printed",
        ),
        (
            "refund rows per refund id in the acquirer's ledger (max)",
            str(max(rows_per_reference.values(), default=0)),
            "≤ 1",
        ),
        ("charges refunded above their captured amount", str(len(over_captured)), "0"),
        (
            "refunds with a final state in the store",
            f"{len(planned) - len(lost) - len(still_open)} / {len(planned)}",
            "all",
        ),
        ("lost refunds", str(len(lost)), "0"),
        ("refunds still open after reconciliation", str(len(still_open)), "0"),
        (
            "refund outcomes: succeeded / exceeds captured / not refundable / "
            "failed at the acquirer / never reached it",
            " / ".join(
                str(outcomes[key])
                for key in (
                    "succeeded",
                    _EXCEEDS,
                    _NOT_REFUNDABLE,
                    ErrorCode.REFUND_FAILED.value,
                    ErrorCode.PROVIDER_UNAVAILABLE.value,
                )
            ),
            "printed",
        ),
        (
            "excess refunds refused with refund_exceeds_captured",
            f"{excess_refused} / {len(excess)}",
            "printed",
        ),
        (
            "refunds with at least one result event in the results topic",
            f"{len(planned) - len(without_event)} / {len(planned)}",
            "all",
        ),
    ]

    verdict.check(over_captured, "charges refunded above their captured amount in the ledger")
    verdict.check(
        [
            f"{reference} ({count} rows)"
            for reference, count in rows_per_reference.items()
            if count > 1
        ]
        + [
            f"{row.reference} (key {row.key})" for row in ledger.refunds if row.key != row.reference
        ],
        "refunds recorded more than once in the ledger, or not under their refund id",
    )
    verdict.check(
        sorted({row.reference for row in ledger.refunds} - fed),
        "ledger refunds for refunds this run never fed",
    )
    verdict.check(lost, "lost refunds (fed, but not in the store)")
    verdict.check(still_open, "refunds still open after reconciliation")
    verdict.check(
        sorted(set(stored) - fed),
        "refunds in the store this run never fed",
    )
    _against_ledger(verdict, planned, stored, ledger)
    verdict.check(
        _payment_totals(facts.store, payment_ids),
        "payments whose refund totals or status disagree with their refunds",
    )
    verdict.check(without_event, "refunds without a result event")
    verdict.check(
        _events_against_store(planned, stored, facts.events),
        "refund events that contradict the store (the last final one, or each other)",
    )
    verdict.check(unexplained, "refund outcomes the order's earlier refunds cannot explain")


def _charges_refunded_above_capture(ledger: LedgerEvidence) -> list[str]:
    held: defaultdict[str, int] = defaultdict(int)
    reference: dict[str, str] = {}
    for row in ledger.refunds:
        reference[row.charge_id] = row.payment_reference
        if row.holds_money:
            held[row.charge_id] += row.amount_minor
    return [
        f"{reference[charge]} (charge {charge}: {amount} refunded or pending, "
        f"{ledger.captured.get(charge, 0)} captured)"
        for charge, amount in held.items()
        if amount > ledger.captured.get(charge, 0)
    ]


def _against_ledger(
    verdict: Verdict,
    planned: Sequence[PlannedRefund],
    stored: dict[str, StoredRefund],
    ledger: LedgerEvidence,
) -> None:
    """A refund succeeded in the store iff the acquirer returned its money; same amount."""
    rows: defaultdict[str, list[LedgerRefund]] = defaultdict(list)
    for row in ledger.refunds:
        rows[row.reference].append(row)
    without_ledger: list[str] = []
    not_succeeded: list[str] = []
    amounts: list[str] = []
    for refund in planned:
        ours = stored.get(refund.refund_id)
        theirs = rows.get(refund.refund_id, [])
        status = None if ours is None else ours.status
        if status == "succeeded" and not any(row.status == "succeeded" for row in theirs):
            said = ", ".join(row.status for row in theirs) or "no row"
            without_ledger.append(f"{refund.refund_id} (ledger: {said})")
        held = [row for row in theirs if row.holds_money]
        if held and status != "succeeded":
            not_succeeded.append(f"{refund.refund_id} (store: {status}, ledger: {held[0].status})")
        if ours is not None and any(row.amount_minor != ours.amount_minor for row in theirs):
            amounts.append(
                f"{refund.refund_id} (store {ours.amount_minor}, "
                f"ledger {', '.join(str(row.amount_minor) for row in theirs)})"
            )
    verdict.check(without_ledger, "succeeded in the store without a succeeded refund in the ledger")
    verdict.check(not_succeeded, "refunded by the acquirer but not succeeded in the store")
    verdict.check(amounts, "refund amounts that differ between the store and the ledger")


def _payment_totals(store: StoreRefunds, payment_ids: Sequence[str]) -> list[str]:
    """``refunded_minor`` is the sum of succeeded refunds, nothing stays reserved, and the
    status follows from the totals."""
    succeeded: defaultdict[str, int] = defaultdict(int)
    for refund in store.refunds.values():
        if refund.status == "succeeded":
            succeeded[refund.payment_id] += refund.amount_minor or 0
    wrong: list[str] = []
    for payment_id in payment_ids:
        payment = store.payments.get(payment_id)
        if payment is None:
            continue  # a lost payment: reported by the payment checks
        expected = _expected_status(payment, succeeded[payment_id])
        if (
            payment.refunded_minor != succeeded[payment_id]
            or payment.refund_reserved_minor != 0
            or payment.status != expected
        ):
            wrong.append(
                f"{payment_id} ({payment.status}, expected {expected}; refunded "
                f"{payment.refunded_minor}, reserved {payment.refund_reserved_minor}, "
                f"succeeded refunds {succeeded[payment_id]} of {payment.amount_minor})"
            )
    return wrong


def _expected_status(payment: StoredPayment, refunded: int) -> str:
    if payment.status not in _CAPTURED:
        # Not captured: no refund may have succeeded. A pending payment is reported
        # by the payment checks; its status is what it is.
        return payment.status if refunded == 0 else "(no refund allowed)"
    if refunded == 0:
        return PaymentStatus.SUCCEEDED.value
    if refunded < payment.amount_minor:
        return PaymentStatus.PARTIALLY_REFUNDED.value
    if refunded == payment.amount_minor:
        return PaymentStatus.REFUNDED.value
    return "(refunded above the amount)"


def _events_against_store(
    planned: Sequence[PlannedRefund],
    stored: dict[str, StoredRefund],
    events: dict[str, list[RefundEventSeen]],
) -> list[str]:
    wrong: list[str] = []
    for refund in planned:
        ours = stored.get(refund.refund_id)
        finals = [e for e in events.get(refund.refund_id, []) if e.status in FINAL_REFUND_STATUSES]
        if ours is None or ours.status not in FINAL_REFUND_STATUSES:
            continue  # lost or open: reported on their own
        if not finals:
            wrong.append(f"{refund.refund_id} (no final event; store {ours.status})")
            continue
        last = finals[-1]
        said = (last.status, last.error_code, last.amount_minor)
        kept = (ours.status, ours.error_code, ours.amount_minor)
        if said != kept or {e.status for e in finals} != {ours.status}:
            wrong.append(f"{refund.refund_id} (last event {said}, store {kept})")
    return wrong


def _replay_orders(
    planned: Sequence[PlannedRefund],
    store: StoreRefunds,
    events: dict[str, list[RefundEventSeen]],
) -> tuple[list[str], Counter[str]]:
    """Walk each order's refunds in the order they were processed (their key's order) and
    check that every stored outcome follows from the payment and the refunds before it.

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
        order = _OrderReplay(payment)
        for refund in refunds:
            ours = store.refunds.get(refund.refund_id)
            if ours is None or ours.status not in FINAL_REFUND_STATUSES:
                continue  # lost or open: reported on their own
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
            # Allowed only if the payment was not captured yet when it came (its charge
            # in doubt): the refusal's event tells the payment's status at that moment.
            if any(e.payment_status not in _CAPTURED for e in events if e.status == "failed"):
                return None
            return "refused as not refundable, yet its events show the payment captured"
        if ours.error_code in _FAILED_AFTER_RESERVING:
            self._reserved_any = True
            self._held += ours.amount_minor or 0
            if wanted is not None and wanted > most:
                return f"reserved {wanted} when at most {most} remained"
            return None
        return f"{outcome}: not an outcome this feed can lead to"
