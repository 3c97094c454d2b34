"""The refund checks of a chaos run: never a double refund, never more than was captured,
none lost, every outcome announced and explained.

Three witnesses again: the acquirer's refund rows (``GET /admin/refunds``, keyed by the
refund id paygate sends as idempotency key), the store's ``refunds`` rows and payment
totals, and the RefundResult events on the results topic. A violation names the refunds
(or payments, or charges) concerned, with what each witness said.

A refund also sent without its order's key (``RefundFacts.echoed``) breaks the promise the
order's key makes: its copy may be processed before the refunds planned ahead of it, or
before its payment exists (refused ``not_found``, which stores nothing and only publishes
an event). Its order is then judged without an order (:mod:`devtools.chaos.refund_replay`), and that
``not_found`` event is not held against the stored outcome; the bounds on money (never a
refund twice, never above the capture, the store and the ledger alike) hold all the same.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from consumer.stray_charges import attempt_of_reversal
from devtools.chaos.evidence import LedgerEvidence, LedgerRefund, RefundEventSeen
from devtools.chaos.refund_evidence import (
    FINAL_REFUND_STATUSES,
    StoredPayment,
    StoredRefund,
    StoreRefunds,
)
from devtools.chaos.refund_plan import PlannedRefund, RefundIntent
from devtools.chaos.refund_replay import replay_orders
from devtools.chaos.report import Verdict
from domain.errors import ErrorCode
from domain.status import CAPTURED, PaymentStatus

_CAPTURED = frozenset(status.value for status in CAPTURED)
_EXCEEDS = ErrorCode.REFUND_EXCEEDS_CAPTURED.value
_NOT_REFUNDABLE = ErrorCode.PAYMENT_NOT_REFUNDABLE.value
_NOT_FOUND = ErrorCode.NOT_FOUND.value


@dataclass(frozen=True, slots=True)
class RefundFacts:
    planned: Sequence[PlannedRefund]  # each fed refund once, in sending order
    store: StoreRefunds  # the run's payments: their refunds and totals
    events: dict[str, list[RefundEventSeen]]  # refund id -> its RefundResult events
    # refund ids also sent without their order's key (or under another key)
    echoed: frozenset[str] = frozenset()


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
    reversals = _stray_reversals(ledger, facts.store)
    rows_per_reference = Counter(row.reference for row in ledger.refunds)
    without_event = [r.refund_id for r in planned if not facts.events.get(r.refund_id)]
    over_captured = _charges_refunded_above_capture(ledger)
    unordered = {r.payment_id for r in planned if r.refund_id in facts.echoed}
    unexplained, outcomes = replay_orders(planned, facts.store, facts.events, unordered)
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
        ("stray charges' reversal refunds in the ledger", str(len(reversals)), "printed"),
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
        sorted({row.reference for row in ledger.refunds if row not in reversals} - fed),
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
        _payment_totals(facts.store, payment_ids, _refunded_outside(ledger, stored, reversals)),
        "payments whose refund totals or status disagree with their refunds",
    )
    verdict.check(without_event, "refunds without a result event")
    verdict.check(
        _events_against_store(planned, stored, facts.events, facts.echoed),
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


def _stray_reversals(ledger: LedgerEvidence, store: StoreRefunds) -> frozenset[LedgerRefund]:
    """The ledger's refunds that reverse a stray charge paygate recorded: paygate's own,
    sent under no refund row of the store. Told by the stray-charge ledger and the key
    alone: the refund's key is a reversal key (consumer.stray_charges.attempt_of_reversal)
    naming an attempt the store recorded as a stray charge, and the charge it refunds was
    made under that very attempt key. Never a refund of a charge a payment stands on: the
    sweep recording a payment's own charge stray and refunding it takes a good payment's
    money back, which the checks this exclusion spares must still see."""
    key_of_charge = {
        charge.charge_id: charge.key for rows in ledger.charges.values() for charge in rows
    }
    return frozenset(
        row
        for row in ledger.refunds
        if (attempt := attempt_of_reversal(row.key)) is not None
        and attempt in store.stray_attempt_keys
        and key_of_charge.get(row.charge_id) == attempt
        and row.charge_id not in store.own_charge_references
    )


def _refunded_outside(
    ledger: LedgerEvidence,
    stored: dict[str, StoredRefund],
    reversals: frozenset[LedgerRefund],
) -> defaultdict[str, int]:
    """Per payment, what the acquirer's ledger refunded (or holds pending) of its charges
    under no refund of paygate's: the one witness of a refund made outside paygate. A
    stray charge's reversal (``reversals``) is paygate's own, of a charge the payment does
    not stand on: never refunded outside it. A refund made outside that failed holds no
    money, as the store takes it back from ``refunded_outside_minor`` on the provider's
    word (persistence.outside_refund_failed): it leaves both sides."""
    outside: defaultdict[str, int] = defaultdict(int)
    for row in ledger.refunds:
        if row.holds_money and row.reference not in stored and row not in reversals:
            outside[row.payment_reference] += row.amount_minor
    return outside


def _payment_totals(
    store: StoreRefunds, payment_ids: Sequence[str], at_acquirer: dict[str, int]
) -> list[str]:
    """``refunded_minor`` is the sum of succeeded refunds plus what the provider reported
    refunded outside paygate (``refunded_outside_minor``: refunds with no refund row,
    domain.provider_refunds), never above what was captured; nothing stays reserved, and
    the status follows from the totals. What was refunded outside paygate is what the
    acquirer's ledger holds beyond paygate's refunds (``at_acquirer``): the totals alone
    would pass a refund of paygate's counted a second time as refunded outside."""
    succeeded: defaultdict[str, int] = defaultdict(int)
    for refund in store.refunds.values():
        if refund.status == "succeeded":
            succeeded[refund.payment_id] += refund.amount_minor or 0
    wrong: list[str] = []
    for payment_id in payment_ids:
        payment = store.payments.get(payment_id)
        if payment is None:
            continue  # a lost payment: reported by the payment checks
        outside = payment.refunded_outside_minor
        expected = _expected_status(payment, succeeded[payment_id] + outside)
        acquirer = at_acquirer.get(payment_id, 0)
        if (
            outside != acquirer
            or payment.refunded_minor != succeeded[payment_id] + outside
            or payment.refund_reserved_minor != 0
            or payment.status != expected
        ):
            wrong.append(
                f"{payment_id} ({payment.status}, expected {expected}; refunded "
                f"{payment.refunded_minor}, reserved {payment.refund_reserved_minor}, "
                f"succeeded refunds {succeeded[payment_id]}"
                + (f" + {outside} refunded outside paygate" if outside else "")
                + f" of {payment.refund_ceiling_minor}"
                + (
                    f"; the acquirer refunded {acquirer} outside paygate"
                    if outside != acquirer
                    else ""
                )
                + ")"
            )
    return wrong


def _expected_status(payment: StoredPayment, refunded: int) -> str:
    """The status ``refunded`` (paygate's succeeded refunds and what was refunded outside
    it) makes of the payment."""
    captured = payment.refund_ceiling_minor
    if payment.status not in _CAPTURED:
        # Not captured: nothing may have been refunded. A pending payment is reported
        # by the payment checks; its status is what it is.
        return payment.status if refunded == 0 else "(no refund allowed)"
    if refunded == 0:
        return PaymentStatus.SUCCEEDED.value
    if refunded < captured:
        return PaymentStatus.PARTIALLY_REFUNDED.value
    if refunded == captured:
        return PaymentStatus.REFUNDED.value
    return "(refunded above the capture)"


def _events_against_store(
    planned: Sequence[PlannedRefund],
    stored: dict[str, StoredRefund],
    events: dict[str, list[RefundEventSeen]],
    echoed: frozenset[str],
) -> list[str]:
    wrong: list[str] = []
    for refund in planned:
        ours = stored.get(refund.refund_id)
        finals = [
            e
            for e in events.get(refund.refund_id, [])
            if e.status in FINAL_REFUND_STATUSES
            # A copy that came before its payment existed: refused, nothing stored.
            and not (refund.refund_id in echoed and e.error_code == _NOT_FOUND)
        ]
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
