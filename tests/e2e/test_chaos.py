"""A small chaos run through the real entry point: consumers SIGKILLed, the broker restarted.

The run owns its broker (``--own-broker``): it restarts it, so it must not be the session's
shared one. The assertions read the table the run prints, the same one people read.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from domain.events import RefundResult
from domain.refunds import RefundStatus
from domain.status import PaymentStatus
from paygate.chaos.evidence import (
    LedgerEvidence,
    LedgerRefund,
    RefundEventSeen,
    ResultsEvidence,
    summarize_results,
)
from paygate.chaos.refund_evidence import StoredPayment, StoredRefund, StoreRefunds
from paygate.chaos.refund_plan import PlannedRefund, RefundIntent
from paygate.chaos.refund_verdict import RefundFacts
from paygate.chaos.verdict import RunFacts, judge
from paygate.kafka.jars import KafkaLaunchError, find_java
from schemas.payments import PaymentMessages
from tests.support.services import service_missing

pytestmark = pytest.mark.e2e

# Not a timing assertion: a bound so that a hung run fails instead of hanging the suite.
HANG_GUARD_S = 900


def _figures(stdout: str) -> dict[str, str]:
    """The printed table as {figure: value}."""
    figures: dict[str, str] = {}
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 3 and cells[0] not in ("figure", "---"):
            figures[cells[0]] = cells[1]
    return figures


def test_a_small_chaos_run_charges_and_refunds_each_payment_at_most_once(tmp_path: Path) -> None:
    try:
        find_java()
    except KafkaLaunchError as exc:
        service_missing(f"no Java runtime for a broker of the run's own: {exc}")
    command = [
        sys.executable,
        "-m",
        "paygate.chaos",
        "--payments",
        "500",
        "--kills",
        "3",
        "--seed",
        "7",
        "--feed-s",
        "10",
        "--own-broker",
        "--work-dir",
        str(tmp_path),
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=HANG_GUARD_S, check=False)
    report = f"stdout:\n{run.stdout}\nstderr (tail):\n{run.stderr[-6000:]}\nlogs: {tmp_path}"
    assert run.returncode == 0, report

    figures = _figures(run.stdout)
    assert figures["double charges"] == "0", report
    assert figures["charges per payment in the acquirer's ledger (max)"] in ("0", "1"), report
    assert figures["lost payments"] == "0", report
    assert figures["payments still pending after reconciliation"] == "0", report
    assert figures["commands with a final state in the store"] == "500 / 500", report
    assert figures["payments with at least one result event in the results topic"] == "500 / 500", (
        report
    )
    kills, restarts = figures["consumer kills (SIGKILL) / restarts"].split(" / ")
    assert int(kills) >= 3, report
    assert int(restarts) >= int(kills), report
    assert figures["broker restarts"] == "1", report
    # Refunds: about a fifth of the orders, each with 2 or 3 refunds (--refund-share 0.2).
    fed_refunds = int(figures["refunds fed (partial / rest / excess)"].split()[0])
    assert fed_refunds >= 150, report
    assert figures["refund rows per refund id in the acquirer's ledger (max)"] in ("0", "1"), report
    assert figures["charges refunded above their captured amount"] == "0", report
    assert figures["lost refunds"] == "0", report
    assert figures["refunds still open after reconciliation"] == "0", report
    assert figures["refunds with a final state in the store"] == f"{fed_refunds} / {fed_refunds}", (
        report
    )
    assert figures["refunds with at least one result event in the results topic"] == (
        f"{fed_refunds} / {fed_refunds}"
    ), report


# The checks themselves, on made-up evidence: a run can only prove something if its
# verdict fails when the evidence is bad. (No I/O; kept beside the run they judge.)


def _facts(**changes: object) -> RunFacts:
    ids = ["pay_a", "pay_b", "pay_c"]
    facts = RunFacts(
        payment_ids=ids,
        min_kills=1,
        ledger=LedgerEvidence(
            max_charges_per_reference=1,
            double_charged_references=0,
            succeeded_charges=Counter({"pay_a": 1, "pay_b": 1}),
            declined=frozenset({"pay_c"}),
        ),
        statuses={"pay_a": "succeeded", "pay_b": "succeeded", "pay_c": "failed"},
        results=ResultsEvidence(
            events=3,
            duplicate_events=0,
            final_statuses={
                "pay_a": frozenset({"succeeded"}),
                "pay_b": frozenset({"succeeded"}),
                "pay_c": frozenset({"failed"}),
            },
            undecodable=0,
        ),
        kills=1,
        restarts=1,
        broker_restarts=1,
        wall_s=1.0,
        consumer_exit_codes={"consumer-01": 0},
    )
    return dataclasses.replace(facts, **changes)  # type: ignore[arg-type]


# pay_a (10.00, captured): 4.00, then the rest (6.00), then 0.01 more, refused. pay_c
# (declined): 1.00, refused as not refundable.
_PLANNED = [
    PlannedRefund("ref_1", "pay_a", "order_a", 400, RefundIntent.PARTIAL, b""),
    PlannedRefund("ref_2", "pay_a", "order_a", None, RefundIntent.REST, b""),
    PlannedRefund("ref_3", "pay_a", "order_a", 1, RefundIntent.EXCESS, b""),
    PlannedRefund("ref_4", "pay_c", "order_c", 100, RefundIntent.PARTIAL, b""),
]
_STORED = {
    "ref_1": StoredRefund("ref_1", "pay_a", "succeeded", 400, None),
    "ref_2": StoredRefund("ref_2", "pay_a", "succeeded", 600, None),
    "ref_3": StoredRefund("ref_3", "pay_a", "failed", 1, "refund_exceeds_captured"),
    "ref_4": StoredRefund("ref_4", "pay_c", "failed", 100, "payment_not_refundable"),
}
_PAYMENTS = {
    "pay_a": StoredPayment("refunded", 1000, 1000, 0),
    "pay_b": StoredPayment("succeeded", 500, 0, 0),
    "pay_c": StoredPayment("failed", 700, 0, 0),
}
_LEDGER_REFUNDS = (
    LedgerRefund("ref_1", "ref_1", "ch_a", "pay_a", 400, "succeeded"),
    LedgerRefund("ref_2", "ref_2", "ch_a", "pay_a", 600, "succeeded"),
)
_CAPTURED = {"ch_a": 1000, "ch_b": 500}


def _event(refund: StoredRefund, payment_status: str) -> RefundEventSeen:
    return RefundEventSeen(refund.status, refund.amount_minor, refund.error_code, payment_status)


def _refund_facts(**changes: object) -> RefundFacts:
    facts = RefundFacts(
        planned=_PLANNED,
        store=StoreRefunds(dict(_STORED), dict(_PAYMENTS)),
        events={
            "ref_1": [_event(_STORED["ref_1"], "partially_refunded")],
            "ref_2": [_event(_STORED["ref_2"], "refunded")],
            "ref_3": [_event(_STORED["ref_3"], "refunded")],
            "ref_4": [_event(_STORED["ref_4"], "failed")],
        },
    )
    return dataclasses.replace(facts, **changes)  # type: ignore[arg-type]


def _with_refunds(
    *, ledger_refunds: tuple[LedgerRefund, ...] = _LEDGER_REFUNDS, **changes: object
) -> RunFacts:
    facts = _facts(refunds=_refund_facts(**changes))
    ledger = dataclasses.replace(facts.ledger, refunds=ledger_refunds, captured=dict(_CAPTURED))
    return dataclasses.replace(facts, ledger=ledger)


def _violations(facts: RunFacts) -> dict[str, list[str]]:
    return {violation.check: violation.ids for violation in judge(facts).violations}


def test_the_verdict_passes_consistent_evidence_and_prints_the_table() -> None:
    verdict = judge(_facts())
    assert verdict.passed
    figures = _figures(verdict.render())
    assert figures["commands with a final state in the store"] == "3 / 3"
    assert figures["double charges"] == "0"


def test_the_verdict_fails_on_a_double_charge() -> None:
    ledger = LedgerEvidence(2, 1, Counter({"pay_a": 2, "pay_b": 1}), frozenset({"pay_c"}))
    verdict = judge(_facts(ledger=ledger))
    assert not verdict.passed
    assert "pay_a" in verdict.render()


def test_the_verdict_fails_on_lost_pending_and_wrong_outcomes() -> None:
    statuses = {"pay_a": "failed", "pay_c": "processing"}  # pay_b lost; pay_a was charged
    verdict = judge(_facts(statuses=statuses))
    checks = {violation.check: violation.ids for violation in verdict.violations}
    assert checks["lost payments (fed, but not in the store)"] == ["pay_b"]
    assert checks["payments still pending after reconciliation"] == ["pay_c"]
    assert checks["charged by the acquirer but not succeeded in the store"] == ["pay_a", "pay_b"]


def test_the_verdict_fails_when_a_consumer_does_not_exit_cleanly() -> None:
    verdict = judge(_facts(consumer_exit_codes={"consumer-07": -9}))
    assert [v.check for v in verdict.violations] == ["consumers that did not exit 0 on SIGTERM"]


def test_the_verdict_passes_consistent_refunds_and_prints_their_figures() -> None:
    verdict = judge(_with_refunds())
    assert verdict.passed, verdict.render()
    figures = _figures(verdict.render())
    assert figures["refunds fed (partial / rest / excess)"] == "4 (2 / 1 / 1)"
    assert figures["refunds with a final state in the store"] == "4 / 4"
    assert figures["excess refunds refused with refund_exceeds_captured"] == "1 / 1"


def test_the_verdict_fails_on_a_double_refund_and_on_refunds_above_the_capture() -> None:
    twice = (*_LEDGER_REFUNDS, LedgerRefund("other-key", "ref_2", "ch_a", "pay_a", 600, "pending"))
    checks = _violations(_with_refunds(ledger_refunds=twice))
    assert checks[
        "refunds recorded more than once in the ledger, or not under their refund id"
    ] == ["ref_2 (2 rows)", "ref_2 (key other-key)"]
    assert checks["charges refunded above their captured amount in the ledger"] == [
        "pay_a (charge ch_a: 1600 refunded or pending, 1000 captured)"
    ]


def test_the_verdict_fails_on_lost_open_and_unledgered_refunds() -> None:
    stored = {**_STORED, "ref_2": StoredRefund("ref_2", "pay_a", "pending", 600, None)}
    del stored["ref_3"]
    checks = _violations(
        _with_refunds(
            ledger_refunds=_LEDGER_REFUNDS[:1], store=StoreRefunds(stored, dict(_PAYMENTS))
        )
    )
    assert checks["lost refunds (fed, but not in the store)"] == ["ref_3"]
    assert checks["refunds still open after reconciliation"] == ["ref_2"]
    assert "payments whose refund totals or status disagree with their refunds" in checks


def test_the_verdict_fails_when_store_ledger_and_totals_disagree() -> None:
    stored = {**_STORED, "ref_2": StoredRefund("ref_2", "pay_a", "failed", 600, "refund_failed")}
    payments = {**_PAYMENTS, "pay_a": StoredPayment("refunded", 1000, 1000, 600)}
    checks = _violations(_with_refunds(store=StoreRefunds(stored, payments)))
    assert checks["refunded by the acquirer but not succeeded in the store"] == [
        "ref_2 (store: failed, ledger: succeeded)"
    ]
    assert checks["payments whose refund totals or status disagree with their refunds"] == [
        "pay_a (refunded, expected partially_refunded; refunded 1000, reserved 600, "
        "succeeded refunds 400 of 1000)"
    ]
    # The events still say succeeded.
    assert "refund events that contradict the store (the last final one, or each other)" in checks


def test_the_verdict_fails_on_refund_outcomes_the_order_cannot_explain() -> None:
    # ref_3 refused although a refused ref_2 left room; ref_4 of a declined payment refunded.
    stored = {
        **_STORED,
        "ref_2": StoredRefund("ref_2", "pay_a", "failed", None, "refund_exceeds_captured"),
        "ref_4": StoredRefund("ref_4", "pay_c", "succeeded", 100, None),
    }
    payments = {**_PAYMENTS, "pay_a": StoredPayment("partially_refunded", 1000, 400, 0)}
    checks = _violations(_with_refunds(store=StoreRefunds(stored, payments)))
    assert checks["refund outcomes the order's earlier refunds cannot explain"] == [
        "ref_2 (rest: refused as exceeding, yet all of at least 600 fit)",
        "ref_3 (excess: refused as exceeding, yet 1 of at least 600 fit)",
        "ref_4 (partial: succeeded, but the payment was never captured)",
    ]


def test_a_refusal_as_not_refundable_needs_an_uncaptured_payment_at_the_time() -> None:
    # ref_1 came while pay_a's charge was in doubt (timed out); ref_2 then took all 10.00.
    stored = {
        **_STORED,
        "ref_1": StoredRefund("ref_1", "pay_a", "failed", 400, "payment_not_refundable"),
        "ref_2": StoredRefund("ref_2", "pay_a", "succeeded", 1000, None),
    }
    ledger = (LedgerRefund("ref_2", "ref_2", "ch_a", "pay_a", 1000, "succeeded"),)
    events = _refund_facts().events
    events["ref_2"] = [_event(stored["ref_2"], "refunded")]

    def judged(payment_status_seen: str) -> dict[str, list[str]]:
        refused = RefundEventSeen("failed", 400, "payment_not_refundable", payment_status_seen)
        return _violations(
            _with_refunds(
                ledger_refunds=ledger,
                store=StoreRefunds(stored, dict(_PAYMENTS)),
                events={**events, "ref_1": [refused]},
            )
        )

    assert judged("pending") == {}
    assert judged("succeeded") == {
        "refund outcomes the order's earlier refunds cannot explain": [
            "ref_1 (partial: refused as not refundable, yet its events show the payment captured)"
        ]
    }


def test_undecodable_and_refund_events_are_read_from_the_results_topic() -> None:
    messages = PaymentMessages.bundled()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    event = RefundResult(
        event_id="evt_1",
        refund_id="ref_1",
        payment_request_id="pay_a",
        order_id="order_a",
        status=RefundStatus.SUCCEEDED,
        currency="EUR",
        amount_minor=400,
        reason=None,
        payment_status=PaymentStatus.PARTIALLY_REFUNDED,
        payment_refunded_minor=400,
        provider="sandbox",
        provider_reference="re_1",
        error=None,
        created_at=now,
        occurred_at=now,
    )
    evidence = summarize_results([messages.encode_refund_result(event), b"junk"], messages)
    assert evidence.undecodable == 1
    assert evidence.refund_events == {
        "ref_1": [RefundEventSeen("succeeded", 400, None, "partially_refunded")]
    }
