"""A small chaos run through the real entry point: consumers SIGKILLed, the broker restarted.

The run owns its broker (``--own-broker``): it restarts it, so it must not be the session's
shared one. The assertions read the table the run prints, the same one people read.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from paygate.chaos.evidence import LedgerEvidence, ResultsEvidence
from paygate.chaos.verdict import RunFacts, judge
from paygate.kafka.jars import KafkaLaunchError, find_java
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


def test_a_small_chaos_run_charges_each_payment_at_most_once(tmp_path: Path) -> None:
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
