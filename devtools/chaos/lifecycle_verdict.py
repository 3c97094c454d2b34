"""The checks of the payments that do not finish at once: payer actions and authorizations.

Each such payment must end in exactly one final state that the acquirer's ledger bears
out, and its result events must say the same:

- a payer action the payer completed is ``succeeded`` and charged once; one the payer
  denied is ``failed``; one left alone (or tried only after it expired, which the acquirer
  must refuse) is ``expired``, its trade closed at the acquirer, and nothing charged;
- an authorization captured has one capture at the acquirer, of the amount the store says
  it captured, at most the authorized amount, an amount one of its captures asked for, and
  under a capture key of the payment; one canceled or expired has a void (or the end of
  its hold) at the acquirer and no capture; one failed holds nothing; none stays
  ``authorized``, since the acquirer's hold ends within the run, and one nothing followed
  must be found ``expired``;
- of the commands sent in order on the order's key, the first one wins; of a capture and
  a cancel racing on two partitions, exactly one does (the other is refused).

The generic checks (:mod:`devtools.chaos.verdict`) still apply: at most one charge or hold
per payment, the store's charge outcome matching the ledger's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from devtools.chaos.evidence import LedgerCharge, LedgerEvidence, PaymentEventSeen
from devtools.chaos.lifecycle_evidence import StoredLifecycle
from devtools.chaos.lifecycle_plan import (
    ORDERED,
    FollowUpKind,
    FollowUpSequence,
    PayerMove,
    PlannedAction,
    PlannedAuthorization,
    sent_twice,
)
from devtools.chaos.payer_actions import PayerAct
from devtools.chaos.report import Verdict

# The outcomes each kind may end in; anything else is unfinished.
ACTION_FINALS = frozenset({"succeeded", "failed", "expired"})
# Not "authorized": the acquirer's hold ends within the run, so paygate must find out.
AUTHORIZATION_FINALS = frozenset({"succeeded", "canceled", "expired", "failed"})
# Statuses an event announces an outcome with; the others (requires_action, authorized,
# capturing, canceling, pending) are steps on the way.
_TERMINAL = frozenset({"succeeded", "failed", "canceled", "expired"})
# A follow-up refused while the charge was still in doubt carries one of these.
_IN_DOUBT = frozenset({"pending", "processing"})


@dataclass(frozen=True, slots=True)
class LifecycleFacts:
    actions: Mapping[str, PlannedAction]  # payer-action payments, by id
    acts: Mapping[str, PayerAct]  # what each payer did (absent: never acted)
    authorizations: Mapping[str, PlannedAuthorization]  # authorize-only payments, by id
    store: Mapping[str, StoredLifecycle]  # the store's row of each, by id

    def unfinished(self) -> list[str]:
        """Those in the store but not in a state their kind may end in."""
        return [
            f"{pid} ({row.status})"
            for pid, row in self.store.items()
            if row.status not in (ACTION_FINALS if pid in self.actions else AUTHORIZATION_FINALS)
        ]


def judge_lifecycle(
    verdict: Verdict,
    facts: LifecycleFacts,
    ledger: LedgerEvidence,
    events: Mapping[str, list[PaymentEventSeen]],
) -> None:
    """Add the figures and a violation for each broken check to ``verdict``."""
    _judge_actions(verdict, facts, ledger)
    _judge_authorizations(verdict, facts, ledger, events)
    ids = [*facts.actions, *facts.authorizations]
    verdict.check(
        [
            f"{pid} (store {facts.store[pid].status}, events {_announced(events.get(pid, []))})"
            for pid in ids
            if pid in facts.store and not _events_agree(facts.store[pid].status, events.get(pid))
        ],
        "payer actions and authorizations whose result events contradict the store's outcome",
    )


def _judge_actions(verdict: Verdict, facts: LifecycleFacts, ledger: LedgerEvidence) -> None:
    planned = Counter(action.move for action in facts.actions.values())
    acts = facts.acts
    ended = Counter(row.status for pid, row in facts.store.items() if pid in facts.actions)
    verdict.rows += [
        (
            "payer actions fed: approve / deny / abandon / approve after expiry",
            " / ".join(str(planned[move]) for move in PayerMove),
            "printed",
        ),
        (
            "payer answers the acquirer took / refused",
            f"{sum(1 for a in acts.values() if a.accepted)}"
            f" / {sum(1 for a in acts.values() if not a.accepted)}",
            "printed",
        ),
        (
            "payer-action payments ended succeeded / failed / expired",
            " / ".join(str(ended[status]) for status in ("succeeded", "failed", "expired")),
            "printed",
        ),
    ]
    wrong: list[str] = []
    charged_expired: list[str] = []
    still_payable: list[str] = []
    late_taken: list[str] = []
    for pid, action in facts.actions.items():
        row = facts.store.get(pid)
        if row is None:
            continue  # lost: the generic check lists it
        charges = ledger.charges.get(pid, ())
        charged = [c for c in charges if c.status == "succeeded"]
        act = acts.get(pid)
        expected = _expected_action_outcome(action, act)
        if expected is not None and row.status != expected:
            wrong.append(f"{pid} ({_said(action, act)}, store {row.status})")
        if act is not None and act.accepted and action.move is PayerMove.LATE:
            late_taken.append(pid)
        if row.status == "expired":
            if charged:
                charged_expired.append(f"{pid} ({', '.join(c.charge_id for c in charged)})")
            if any(c.status == "requires_action" for c in charges):
                still_payable.append(pid)
    verdict.check(wrong, "payer actions whose outcome is not what the payer did")
    verdict.check(charged_expired, "expired payments with a charge at the acquirer")
    verdict.check(
        still_payable, "expired in the store, yet still waiting for the payer at the acquirer"
    )
    verdict.check(late_taken, "payers the acquirer let pay after their action expired")


def _expected_action_outcome(action: PlannedAction, act: PayerAct | None) -> str | None:
    """What the payment must end as, given what its payer managed to do (None: either)."""
    if action.move is PayerMove.ABANDON or act is None:
        # Never acted (or never saw the action: its payment ended before showing one).
        return "expired" if action.move is PayerMove.ABANDON else None
    if act.answer == 0:
        return None  # no answer: the approval may or may not have landed
    if not act.accepted:
        return "expired"  # refused: the action had expired
    return "failed" if action.move is PayerMove.DENY else "succeeded"


def _said(action: PlannedAction, act: PayerAct | None) -> str:
    if act is None:
        return f"{action.move.value}, never acted"
    answer = "taken" if act.accepted else f"refused {act.code or act.answer}"
    return f"{action.move.value}, {answer}"


def _judge_authorizations(
    verdict: Verdict,
    facts: LifecycleFacts,
    ledger: LedgerEvidence,
    events: Mapping[str, list[PaymentEventSeen]],
) -> None:
    auths = facts.authorizations
    sequences = Counter(a.sequence for a in auths.values())
    ended = Counter(row.status for pid, row in facts.store.items() if pid in auths)
    racing = [a for a in auths.values() if a.sequence is FollowUpSequence.RACE]
    race_wins = Counter(
        facts.store[a.payment_id].status for a in racing if a.payment_id in facts.store
    )
    partial = 0
    problems: dict[str, list[str]] = {check: [] for check in _AUTHORIZATION_CHECKS}
    for pid, plan in auths.items():
        row = facts.store.get(pid)
        if row is None:
            continue  # lost: the generic check lists it
        charges = ledger.charges.get(pid, ())
        for check, detail in _authorization_problems(pid, plan, row, charges, events.get(pid, [])):
            problems[check].append(f"{pid} ({detail})")
        if row.status == "succeeded" and row.captured_minor is not None:
            partial += row.captured_minor < row.amount_minor
    verdict.rows += [
        (
            "authorizations fed, by follow-up: " + " / ".join(s.value for s in FollowUpSequence),
            " / ".join(str(sequences[s]) for s in FollowUpSequence),
            "printed",
        ),
        (
            "capture and cancel commands fed (of them racing without a key / sent twice)",
            f"{sum(len(a.follow_ups) for a in auths.values())} ({len(racing)}"
            f" / {sum(1 for a in auths.values() if sent_twice(a.sequence))})",
            "printed",
        ),
        (
            "authorizations ended captured / canceled / expired / failed / authorized",
            " / ".join(
                str(ended[s]) for s in ("succeeded", "canceled", "expired", "failed", "authorized")
            ),
            "printed",
        ),
        ("of the captured, partially (the rest released)", str(partial), "printed"),
        (
            "capture-cancel races won by the capture / the cancel / neither",
            f"{race_wins['succeeded']} / {race_wins['canceled']}"
            f" / {sum(race_wins.values()) - race_wins['succeeded'] - race_wins['canceled']}",
            "printed",
        ),
        (
            "authorizations whose outcome the acquirer or the order of commands contradicts",
            str(len({item.split(" ", 1)[0] for found in problems.values() for item in found})),
            "0",
        ),
    ]
    for check, found in problems.items():
        verdict.check(found, check)


_CAPTURED_TWICE = "authorizations captured more than once at the acquirer"
_CAPTURE_MISMATCH = "captures whose amount at the acquirer is not the store's"
_OVER_AUTHORIZED = "captures above the authorized amount"
_UNASKED = "captures of an amount no capture command asked for"
_FOREIGN_KEY = "captures made under a key that is not the payment's capture key"
_CANCELED_CAPTURED = "captures at the acquirer of a canceled or expired payment"
_NO_VOID = "canceled or expired in the store, yet not released at the acquirer"
_NOT_CAPTURED = "captured in the store without a capture at the acquirer"
_HELD_FAILED = "failed in the store, yet holding or taking money at the acquirer"
_NOT_EXPIRED = "authorizations nothing followed that did not end expired"
_OUT_OF_ORDER = "authorizations whose first command on the order's key did not win"
_AUTHORIZATION_CHECKS = (
    _CAPTURED_TWICE,
    _CAPTURE_MISMATCH,
    _OVER_AUTHORIZED,
    _UNASKED,
    _FOREIGN_KEY,
    _CANCELED_CAPTURED,
    _NO_VOID,
    _NOT_CAPTURED,
    _HELD_FAILED,
    _NOT_EXPIRED,
    _OUT_OF_ORDER,
)


def _authorization_problems(
    pid: str,
    plan: PlannedAuthorization,
    row: StoredLifecycle,
    charges: Iterable[LedgerCharge],
    events: list[PaymentEventSeen],
) -> Iterable[tuple[str, str]]:
    """(check, detail) for every way this authorization's evidence does not add up."""
    charges = list(charges)
    captured = [c for c in charges if c.status == "succeeded" or c.capture_key is not None]
    own = next((c for c in charges if c.charge_id == row.provider_reference), None)
    status = row.status
    if len(captured) > 1:
        detail = ", ".join(f"{c.charge_id}: {c.captured_minor}" for c in captured)
        yield _CAPTURED_TWICE, detail
    for charge in captured:
        if charge.captured_minor > charge.amount_minor:
            yield _OVER_AUTHORIZED, f"{charge.captured_minor} of {charge.amount_minor}"
        if charge.capture_key is None or not charge.capture_key.startswith(f"{pid}-capture"):
            yield _FOREIGN_KEY, f"{charge.charge_id} under {charge.capture_key}"
    if status == "succeeded":
        in_store = row.amount_minor if row.captured_minor is None else row.captured_minor
        if own is None or own not in captured:
            yield _NOT_CAPTURED, f"charge {row.provider_reference}"
        elif own.captured_minor != in_store:
            yield _CAPTURE_MISMATCH, f"acquirer {own.captured_minor}, store {in_store}"
        if in_store > row.amount_minor:
            yield _OVER_AUTHORIZED, f"store {in_store} of {row.amount_minor}"
        if in_store not in plan.capture_amounts:
            asked = ", ".join(map(str, sorted(plan.capture_amounts)))
            yield _UNASKED, f"{in_store}; asked {asked or 'none'}"
    elif status in ("canceled", "expired"):
        if captured:
            yield _CANCELED_CAPTURED, f"{status}, captured {captured[0].captured_minor}"
        if own is None or own.status not in ("canceled", "expired"):
            yield _NO_VOID, f"{status}, acquirer {own.status if own else 'no charge'}"
    elif status == "failed":
        holding = [c for c in charges if c.status in ("succeeded", "authorized")]
        if holding:
            yield _HELD_FAILED, ", ".join(f"{c.charge_id} {c.status}" for c in holding)
    if plan.sequence is FollowUpSequence.HOLD and status not in ("expired", "failed"):
        yield _NOT_EXPIRED, status
    if plan.sequence in ORDERED and status in ("succeeded", "canceled"):
        winner = FollowUpKind.CAPTURE if status == "succeeded" else FollowUpKind.CANCEL
        if winner is not plan.first_keyed and not _refused_in_doubt(events):
            yield _OUT_OF_ORDER, f"{plan.sequence.value}, yet {status}"


def _refused_in_doubt(events: Iterable[PaymentEventSeen]) -> bool:
    """Whether a capture or cancel was refused while the charge was still in doubt."""
    return any(e.error_code is not None and e.status in _IN_DOUBT for e in events)


def _events_agree(status: str, events: list[PaymentEventSeen] | None) -> bool:
    """The outcomes announced are exactly the store's; a payment still held announces none
    and has said it is held."""
    seen = events or []
    announced = {e.status for e in seen if e.status in _TERMINAL}
    if status in _TERMINAL:
        return announced == {status}
    return not announced and any(e.status == status for e in seen)


def _announced(events: list[PaymentEventSeen]) -> str:
    return ", ".join(dict.fromkeys(e.status for e in events)) or "none"
