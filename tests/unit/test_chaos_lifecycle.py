"""The chaos run's payer actions and authorizations: the plan, and the verdict on made-up
evidence. A verdict only proves something if it fails when the evidence is bad: each
kind of broken evidence here (a double capture, a capture of a canceled payment, a charge
of an expired one, ...) must be reported, and consistent evidence must pass.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from devtools.chaos.evidence import (
    LedgerCharge,
    LedgerEvidence,
    PaymentEventSeen,
    ResultsEvidence,
)
from devtools.chaos.feed_plan import PlannedPayment, build_plan
from devtools.chaos.lifecycle_evidence import StoredLifecycle
from devtools.chaos.lifecycle_plan import (
    FollowUpKind,
    FollowUpSequence,
    PayerMove,
    PlannedAction,
    PlannedAuthorization,
    PlannedFollowUp,
    plan_follow_ups,
)
from devtools.chaos.lifecycle_verdict import LifecycleFacts
from devtools.chaos.options import parse_options
from devtools.chaos.payer_actions import PayerAct
from devtools.chaos.payers import PAYER_ACTION_CARD
from devtools.chaos.verdict import RunFacts, judge
from domain.cancels import CancelPayment
from domain.captures import CapturePayment
from schemas.payments import PaymentMessages

pytestmark = pytest.mark.unit

_NOW = datetime(2026, 1, 1, tzinfo=UTC)
_PAY_X = "pay_" + "0" * 32

# pay_ok: a plain card payment. pay_ra: a payer action the payer approved; pay_rx: one
# left alone. pay_cap: an authorization of 10.00 partly captured (4.00); pay_can: one
# canceled; pay_race: a capture and a cancel raced, the cancel won.
_IDS = ["pay_ok", "pay_ra", "pay_rx", "pay_cap", "pay_can", "pay_race"]


def _follow_up(pid: str, kind: FollowUpKind, amount: int | None, keyed: bool = True):
    return PlannedFollowUp(pid, f"order_{pid}", kind, amount, b"", keyed)


_CAPTURE, _CANCEL = FollowUpKind.CAPTURE, FollowUpKind.CANCEL
_AUTHORIZATIONS = {
    "pay_cap": PlannedAuthorization(
        "pay_cap", 1000, FollowUpSequence.PARTIAL, (_follow_up("pay_cap", _CAPTURE, 400),)
    ),
    "pay_can": PlannedAuthorization(
        "pay_can", 700, FollowUpSequence.CANCEL, (_follow_up("pay_can", _CANCEL, None),)
    ),
    "pay_race": PlannedAuthorization(
        "pay_race",
        500,
        FollowUpSequence.RACE,
        (_follow_up("pay_race", _CANCEL, None), _follow_up("pay_race", _CAPTURE, None, False)),
    ),
}
_ACTIONS = {
    "pay_ra": PlannedAction("pay_ra", PayerMove.APPROVE, 1.0),
    "pay_rx": PlannedAction("pay_rx", PayerMove.ABANDON, 1.0),
}
_STORE = {
    "pay_ra": StoredLifecycle("succeeded", 300, None, "ch_ra", None),
    "pay_rx": StoredLifecycle("expired", 300, None, "ch_rx", "payment_expired"),
    "pay_cap": StoredLifecycle("succeeded", 1000, 400, "ch_cap", None),
    "pay_can": StoredLifecycle("canceled", 700, None, "ch_can", None),
    "pay_race": StoredLifecycle("canceled", 500, None, "ch_race", None),
}
_CHARGES = {
    "pay_ok": (LedgerCharge("ch_ok", "pay_ok-a1", "succeeded", 200, 200, None),),
    "pay_ra": (LedgerCharge("ch_ra", "pay_ra-a1", "succeeded", 300, 300, None),),
    "pay_rx": (LedgerCharge("ch_rx", "pay_rx-a1", "expired", 300, 0, None),),
    "pay_cap": (
        LedgerCharge("ch_cap", "pay_cap-a1", "succeeded", 1000, 400, "pay_cap-capture-400"),
    ),
    "pay_can": (LedgerCharge("ch_can", "pay_can-a1", "canceled", 700, 0, None),),
    "pay_race": (LedgerCharge("ch_race", "pay_race-a1", "canceled", 500, 0, None),),
}


def _seen(*statuses: str, error: str | None = None) -> list[PaymentEventSeen]:
    return [PaymentEventSeen(status, None) for status in statuses] + (
        [] if error is None else [PaymentEventSeen(statuses[-1], error)]
    )


_EVENTS = {
    "pay_ok": _seen("succeeded"),
    "pay_ra": _seen("requires_action", "succeeded"),
    "pay_rx": _seen("requires_action", "expired"),
    "pay_cap": _seen("authorized", "succeeded"),
    "pay_can": _seen("authorized", "canceled"),
    "pay_race": _seen("authorized", "canceled", error="payment_not_capturable"),
}


def _ledger(charges: dict[str, tuple[LedgerCharge, ...]]) -> LedgerEvidence:
    succeeded = Counter(
        ref for ref, rows in charges.items() for row in rows if row.status == "succeeded"
    )
    return LedgerEvidence(
        max_charges_per_reference=max(succeeded.values(), default=0),
        double_charged_references=sum(1 for n in succeeded.values() if n > 1),
        succeeded_charges=succeeded,
        declined=frozenset(),
        charge_references={
            row.charge_id: ref
            for ref, rows in charges.items()
            for row in rows
            if row.status == "succeeded"
        },
        charges=charges,
    )


def _results(events: dict[str, list[PaymentEventSeen]]) -> ResultsEvidence:
    finals = {
        pid: frozenset(e.status for e in seen if e.status in ("succeeded", "failed"))
        for pid, seen in events.items()
    }
    return ResultsEvidence(
        events=sum(map(len, events.values())),
        duplicate_events=0,
        final_statuses={pid: found for pid, found in finals.items() if found},
        undecodable=0,
        payment_events=events,
    )


def _facts(
    *,
    store: dict[str, StoredLifecycle] | None = None,
    charges: Mapping[str, tuple[LedgerCharge, ...]] | None = None,
    events: dict[str, list[PaymentEventSeen]] | None = None,
    acts: dict[str, PayerAct] | None = None,
) -> RunFacts:
    store = {**_STORE, **(store or {})}
    charges = {**_CHARGES, **(charges or {})}
    events = {**_EVENTS, **(events or {})}
    outcome = {"pay_ok": "succeeded"} | {
        pid: "succeeded" if row.status == "succeeded" else row.status for pid, row in store.items()
    }
    return RunFacts(
        payment_ids=_IDS,
        min_kills=0,
        ledger=_ledger(charges),
        statuses=outcome,
        results=_results(events),
        kills=0,
        restarts=0,
        broker_restarts=1,
        wall_s=1.0,
        consumer_exit_codes={},
        lifecycle=LifecycleFacts(
            actions=_ACTIONS,
            acts=acts if acts is not None else {"pay_ra": PayerAct(PayerMove.APPROVE, 200)},
            authorizations=_AUTHORIZATIONS,
            store=store,
        ),
    )


def _violations(facts: RunFacts) -> dict[str, list[str]]:
    return {violation.check: violation.ids for violation in judge(facts).violations}


def _figures(text: str) -> dict[str, str]:
    rows = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): cells[1].strip() for cells in rows if len(cells) == 3}


def test_consistent_payer_actions_and_authorizations_pass() -> None:
    verdict = judge(_facts())
    assert verdict.passed, verdict.render()
    figures = _figures(verdict.render())
    assert figures["payer-action payments ended succeeded / failed / expired"] == "1 / 0 / 1"
    assert figures["authorizations ended captured / canceled / expired / failed / authorized"] == (
        "1 / 2 / 0 / 0 / 0"
    )
    assert figures["of the captured, partially (the rest released)"] == "1"
    assert figures["capture-cancel races won by the capture / the cancel / neither"] == "0 / 1 / 0"
    assert figures["commands with a final state in the store"] == "6 / 6"


def test_a_double_capture_is_reported() -> None:
    # The same authorization captured under two keys: two charges taken at the acquirer.
    twice = (
        LedgerCharge("ch_cap", "pay_cap-a1", "succeeded", 1000, 400, "pay_cap-capture-400"),
        LedgerCharge("ch_cap2", "pay_cap-a2", "succeeded", 1000, 400, "pay_cap-capture-400"),
    )
    checks = _violations(_facts(charges={"pay_cap": twice}))
    assert checks["authorizations captured more than once at the acquirer"] == [
        "pay_cap (ch_cap: 400, ch_cap2: 400)"
    ]
    assert "double charges in the ledger (payments charged under more than one attempt key)" in (
        checks
    )


def test_a_capture_above_what_the_store_captured_is_reported() -> None:
    # One capture, but of the whole amount where the store says 4.00: the rest not released.
    whole = (LedgerCharge("ch_cap", "pay_cap-a1", "succeeded", 1000, 1000, "pay_cap-capture"),)
    checks = _violations(_facts(charges={"pay_cap": whole}))
    assert checks["captures whose amount at the acquirer is not the store's"] == [
        "pay_cap (acquirer 1000, store 400)"
    ]


def test_a_capture_on_a_canceled_payment_is_reported() -> None:
    # The race: the store says the cancel won, the acquirer captured.
    captured = (LedgerCharge("ch_race", "pay_race-a1", "succeeded", 500, 500, "pay_race-capture"),)
    checks = _violations(_facts(charges={"pay_race": captured}))
    assert checks["captures at the acquirer of a canceled or expired payment"] == [
        "pay_race (canceled, captured 500)"
    ]
    assert checks["canceled or expired in the store, yet not released at the acquirer"] == [
        "pay_race (canceled, acquirer succeeded)"
    ]
    assert checks["charged by the acquirer but not succeeded in the store"] == ["pay_race"]


def test_both_a_capture_and_a_cancel_announced_is_reported() -> None:
    events = {"pay_race": _seen("authorized", "succeeded", "canceled")}
    checks = _violations(_facts(events=events))
    assert checks[
        "payer actions and authorizations whose result events contradict the store's outcome"
    ] == ["pay_race (store canceled, events authorized, succeeded, canceled)"]


def test_a_charge_on_an_expired_payment_is_reported() -> None:
    # The payer left it alone and paygate closed it as expired, yet the acquirer charged.
    charged = (LedgerCharge("ch_rx", "pay_rx-a1", "succeeded", 300, 300, None),)
    checks = _violations(_facts(charges={"pay_rx": charged}))
    assert checks["expired payments with a charge at the acquirer"] == ["pay_rx (ch_rx)"]
    assert checks["charged by the acquirer but not succeeded in the store"] == ["pay_rx"]


def test_an_expired_payment_still_payable_at_the_acquirer_is_reported() -> None:
    waiting = (LedgerCharge("ch_rx", "pay_rx-a1", "requires_action", 300, 0, None),)
    checks = _violations(_facts(charges={"pay_rx": waiting}))
    assert checks["expired in the store, yet still waiting for the payer at the acquirer"] == [
        "pay_rx"
    ]


def test_an_outcome_other_than_the_payers_is_reported() -> None:
    # The payer's approval was taken, yet the store says expired (and nothing charged).
    store = {"pay_ra": StoredLifecycle("expired", 300, None, "ch_ra", None)}
    charges = {"pay_ra": (LedgerCharge("ch_ra", "pay_ra-a1", "expired", 300, 0, None),)}
    events = {"pay_ra": _seen("requires_action", "expired")}
    checks = _violations(_facts(store=store, charges=charges, events=events))
    assert checks["payer actions whose outcome is not what the payer did"] == [
        "pay_ra (approve, taken, store expired)"
    ]
    # A payer refused as too late is judged by what the acquirer answered: expired is right.
    refused = {"pay_ra": PayerAct(PayerMove.APPROVE, 422, "payment_expired")}
    assert _violations(_facts(store=store, charges=charges, events=events, acts=refused)) == {}


def test_unfinished_authorizations_are_reported() -> None:
    # One left mid-void; one still held, although the acquirer's hold ends within the run.
    store = {
        "pay_can": StoredLifecycle("canceling", 700, None, "ch_can", None),
        "pay_cap": StoredLifecycle("authorized", 1000, None, "ch_cap", None),
    }
    charges = {"pay_cap": (LedgerCharge("ch_cap", "pay_cap-a1", "authorized", 1000, 0, None),)}
    events = {"pay_cap": _seen("authorized"), "pay_can": _seen("authorized", "canceling")}
    checks = _violations(_facts(store=store, charges=charges, events=events))
    assert checks["payments still pending after reconciliation"] == [
        "pay_can (canceling)",
        "pay_cap (authorized)",
    ]


def test_an_authorization_nothing_followed_must_expire() -> None:
    hold = PlannedAuthorization("pay_can", 700, FollowUpSequence.HOLD, ())
    facts = _facts()
    assert facts.lifecycle is not None
    held = dataclasses.replace(facts.lifecycle, authorizations={**_AUTHORIZATIONS, "pay_can": hold})
    # Canceled, by nobody's command: paygate voided what nobody asked to void.
    checks = _violations(dataclasses.replace(facts, lifecycle=held))
    assert checks["authorizations nothing followed that did not end expired"] == [
        "pay_can (canceled)"
    ]
    ok = _facts(
        store={"pay_can": StoredLifecycle("expired", 700, None, "ch_can", None)},
        charges={"pay_can": (LedgerCharge("ch_can", "pay_can-a1", "expired", 700, 0, None),)},
        events={"pay_can": _seen("authorized", "expired")},
    )
    assert ok.lifecycle is not None
    expired = dataclasses.replace(ok.lifecycle, authorizations=held.authorizations)
    assert _violations(dataclasses.replace(ok, lifecycle=expired)) == {}


def test_a_capture_of_an_amount_nobody_asked_is_reported() -> None:
    store = {"pay_cap": StoredLifecycle("succeeded", 1000, 300, "ch_cap", None)}
    charges = {
        "pay_cap": (LedgerCharge("ch_cap", "pay_cap-a1", "succeeded", 1000, 300, "x-capture"),)
    }
    checks = _violations(_facts(store=store, charges=charges))
    assert checks["captures of an amount no capture command asked for"] == [
        "pay_cap (300; asked 400)"
    ]
    assert checks["captures made under a key that is not the payment's capture key"] == [
        "pay_cap (ch_cap under x-capture)"
    ]


def test_a_cancel_first_in_order_must_win() -> None:
    order = dataclasses.replace(
        _AUTHORIZATIONS["pay_can"],
        sequence=FollowUpSequence.CANCEL_THEN_CAPTURE,
        follow_ups=(_follow_up("pay_can", _CANCEL, None), _follow_up("pay_can", _CAPTURE, None)),
    )
    facts = _facts(
        store={"pay_can": StoredLifecycle("succeeded", 700, None, "ch_can", None)},
        charges={
            "pay_can": (
                LedgerCharge("ch_can", "pay_can-a1", "succeeded", 700, 700, "pay_can-capture"),
            )
        },
        events={"pay_can": _seen("authorized", "succeeded")},
    )
    assert facts.lifecycle is not None
    lifecycle = dataclasses.replace(
        facts.lifecycle, authorizations={**_AUTHORIZATIONS, "pay_can": order}
    )
    checks = _violations(dataclasses.replace(facts, lifecycle=lifecycle))
    assert checks["authorizations whose first command on the order's key did not win"] == [
        "pay_can (cancel_then_capture, yet succeeded)"
    ]


# -- the plan -------------------------------------------------------------------------------


@functools.cache
def _public_key() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _plan(action_share: float, authorize_share: float):
    return build_plan(
        payments=400,
        duplicate_rate=0.05,
        feed_s=10,
        run_id="t",
        rng=random.Random("3:feed"),
        messages=PaymentMessages.bundled(),
        public_key_pem=_public_key(),
        refund_share=0.2,
        refund_rng=random.Random("3:refunds"),
        echo_rate=0.1,
        echo_rng=random.Random("3:echoes"),
        action_share=action_share,
        authorize_share=authorize_share,
        lifecycle_rng=random.Random("3:lifecycle"),
    )


def test_the_plan_feeds_payer_actions_and_authorizations_from_the_seed() -> None:
    plan = _plan(0.1, 0.2)
    again = _plan(0.1, 0.2)  # the same draws (the sealed accounts' nonces differ)
    assert [(p.payment_id, p.payer) for p in plan.payments] == [
        (p.payment_id, p.payer) for p in again.payments
    ]
    assert plan.actions == again.actions
    assert {pid: (a.sequence, a.capture_amounts) for pid, a in plan.authorizations.items()} == {
        pid: (a.sequence, a.capture_amounts) for pid, a in again.authorizations.items()
    }
    messages = PaymentMessages.bundled()
    by_id = {p.payment_id: p for p in plan.payments}
    assert 20 <= len(plan.actions) <= 60
    assert 50 <= len(plan.authorizations) <= 110
    assert {by_id[pid].payer for pid in plan.actions} == {PAYER_ACTION_CARD}
    assert {a.move for a in plan.actions.values()} == set(PayerMove)
    for pid in plan.authorizations:
        command = messages.decode_command(by_id[pid].payload)
        assert command.capture is False
    assert all(messages.decode_command(by_id[pid].payload).capture for pid in plan.actions)
    # No refunds behind either kind.
    assert not {r.payment_id for r in plan.refunds} & (set(plan.actions) | set(plan.authorizations))
    sent = [c for batch in plan.batches for c in batch if isinstance(c, PlannedFollowUp)]
    # The races are not scheduled: the racer sends each, both commands at once, one of
    # them without the order's key, once its authorization is known.
    assert {a.sequence for a in plan.races} == {FollowUpSequence.RACE}
    assert not [e for e in plan.echoes if isinstance(e.command, PlannedFollowUp)]
    assert all(
        sorted(f.keyed for f in race.follow_ups) == [False, True]
        and {f.kind for f in race.follow_ups} == {_CAPTURE, _CANCEL}
        for race in plan.races
    )
    twice = (FollowUpSequence.PARTIAL_TWICE, FollowUpSequence.CANCEL_TWICE)
    assert len(sent) == plan.follow_ups - 2 * len(plan.races) + sum(
        1 for a in plan.authorizations.values() if a.sequence in twice
    )
    assert plan.duplicates == sum(map(len, plan.batches)) - len(
        {id(c) for batch in plan.batches for c in batch}
    )
    for follow_up in sent:
        decoded = messages.decode_any_command(follow_up.payload)
        kind = CapturePayment if follow_up.kind is FollowUpKind.CAPTURE else CancelPayment
        assert isinstance(decoded, kind)
        assert decoded.payment_request_id == follow_up.payment_id
    # Each keyed follow-up goes out after its payment (a later batch, or behind it in its own).
    first: dict[tuple[type, str], tuple[int, int]] = {}
    for b, batch in enumerate(plan.batches):
        for i, command in enumerate(batch):
            first.setdefault((type(command), command.command_id), (b, i))
    for f in sent:
        assert first[PlannedFollowUp, f.payment_id] > first[PlannedPayment, f.payment_id]
    assert {a.sequence for a in plan.authorizations.values()} == set(FollowUpSequence)


def test_turning_the_lifecycle_on_keeps_the_other_payments_amounts() -> None:
    plain, mixed = _plan(0.0, 0.0), _plan(0.1, 0.2)
    assert plain.actions == {}
    assert plain.authorizations == {}
    assert [p.payment_id for p in plain.payments] == [p.payment_id for p in mixed.payments]
    messages = PaymentMessages.bundled()
    later = set(mixed.actions) | set(mixed.authorizations)
    for before, after in zip(plain.payments, mixed.payments, strict=True):
        if before.payment_id not in later:
            assert before.payer == after.payer
        old, new = messages.decode_command(before.payload), messages.decode_command(after.payload)
        assert old.amount == new.amount


def test_a_follow_up_sequence_asks_what_its_name_says() -> None:
    messages = PaymentMessages.bundled()
    seen: dict[FollowUpSequence, PlannedAuthorization] = {}
    rng = random.Random(5)
    while len(seen) < len(FollowUpSequence):
        planned = plan_follow_ups(
            payment_id=_PAY_X,
            order_id="order_x",
            amount_minor=1000,
            requested_at=_NOW,
            rng=rng,
            messages=messages,
        )
        seen.setdefault(planned.sequence, planned)
    kinds = {s: [(f.kind, f.keyed) for f in a.follow_ups] for s, a in seen.items()}
    assert kinds[FollowUpSequence.CAPTURE_THEN_CANCEL] == [(_CAPTURE, True), (_CANCEL, True)]
    assert kinds[FollowUpSequence.CANCEL_THEN_CAPTURE] == [(_CANCEL, True), (_CAPTURE, True)]
    assert set(kinds[FollowUpSequence.RACE]) in (
        {(_CAPTURE, False), (_CANCEL, True)},
        {(_CAPTURE, True), (_CANCEL, False)},
    )
    partial = seen[FollowUpSequence.PARTIAL].follow_ups[0].amount_minor
    assert partial is not None
    assert 1 <= partial < 1000
    assert seen[FollowUpSequence.CAPTURE].capture_amounts == {1000}
    other = seen[FollowUpSequence.PARTIAL_THEN_OTHER]
    assert len(other.capture_amounts) == 2
    assert 1000 in other.capture_amounts


def test_options_bound_the_lifecycle_shares() -> None:
    options = parse_options([])
    assert (
        options.action_share,
        options.authorize_share,
        options.action_ttl_s,
        options.authorization_hold_s,
    ) == (0.05, 0.1, 15.0, 30.0)
    for argv in (
        ["--action-share", "0.6", "--authorize-share", "0.5"],
        ["--action-share", "-0.1"],
        ["--action-ttl-s", "nan"],
        ["--authorization-hold-s", "-1"],
    ):
        with pytest.raises(SystemExit):
            parse_options(argv)
