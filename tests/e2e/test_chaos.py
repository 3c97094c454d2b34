"""A small chaos run through the real entry point: consumers SIGKILLed and turned into
zombies, copies of commands sent without their order's key, the broker restarted.

The run owns its broker (``--own-broker``): it restarts it, so it must not be the session's
shared one. The assertions read the table the run prints, the same one people read.

Below the run, the verdict's checks on made-up evidence, and the pure parts of the faults.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import random
import re
import sqlite3
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from devtools.chaos.attempt_evidence import StoreAttempts
from devtools.chaos.evidence import (
    LedgerEvidence,
    LedgerRefund,
    RefundEventSeen,
    ResultsEvidence,
    summarize_results,
)
from devtools.chaos.fault_verdict import FaultFacts
from devtools.chaos.feed_plan import (
    ECHO_DELAY_S,
    EchoKey,
    FeedPlan,
    PlannedPayment,
    build_plan,
    order_prefix,
)
from devtools.chaos.harness import Child
from devtools.chaos.options import parse_options
from devtools.chaos.payers import (
    DECLINED_CARD,
    FAILS_ONCE_CARD,
    LATENCY_FAILS_ONCE_CARD,
    PAYEE_IBAN,
    PAYER_ACTION_CARD,
    PAYER_MIX,
)
from devtools.chaos.refund_evidence import StoredPayment, StoredRefund, StoreRefunds
from devtools.chaos.refund_plan import PlannedRefund, RefundIntent
from devtools.chaos.refund_verdict import RefundFacts
from devtools.chaos.run import chaos_settings
from devtools.chaos.stall_evidence import StalledPartition
from devtools.chaos.store_lock import sqlite_lock_probe, write_locked
from devtools.chaos.verdict import RunFacts, judge
from devtools.chaos.zombie import BackoffWatch, ZombieEpisode, parse_backoff
from devtools.kafka.jars import KafkaLaunchError, find_java
from domain.events import RefundResult
from domain.refunds import RefundStatus
from domain.status import PaymentStatus
from domain.vaulted import EncryptedAccount
from paygate.settings import Settings
from schemas.payments import PaymentMessages
from tests.support.child_env import child_environment
from tests.support.clear_numbers import (
    CLEAR_ACCOUNT_NUMBERS,
    numbers_in,
    scan_files,
    scan_sqlite,
)
from tests.support.result_events import payment_result
from tests.support.services import service_missing

pytestmark = pytest.mark.e2e

# Not a timing assertion: a bound so that a hung run fails instead of hanging the suite.
HANG_GUARD_S = 900


_ZOMBIE_ROW = (
    "zombie episodes (SIGSTOP past the session, SIGCONT after the rebalance) / "
    "caught in a retry back-off / another consumer calling the acquirer at SIGCONT"
)


def _figures(stdout: str) -> dict[str, str]:
    """The printed table as {figure: value}."""
    figures: dict[str, str] = {}
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 3 and cells[0] not in ("figure", "---"):
            figures[cells[0]] = cells[1]
    return figures


def test_a_small_chaos_run_charges_and_refunds_each_payment_at_most_once(tmp_path: Path) -> None:
    """Exactly-once effects under every fault of the chaos run, at CI size.

    Besides the kills and the broker restart: a zombie episode (a consumer SIGSTOPped in a
    retry back-off past its session, SIGCONTed while the other consumer calls the acquirer
    for its payments) and 20 % of payments and refunds sent again 0.05-2 s later without a
    key or keyed by their own id, with acquirer latency and 503-once payers in the mix.
    Those put two workers on one payment at once. Until the store makes a worker own the
    attempt it calls the acquirer with, the run double-charges and the first assertion
    (exit code 0) fails; its report then lists the double charges by attempt key. The mix
    also has payers whose 503 asks ``Retry-After: 86400``: until the consumer bounds that
    wait, a handler sleeps out the day and the stall check fails too (in some runs: a
    rebalance after the reconciler gave the payment up clears it).
    """
    try:
        find_java()
    except KafkaLaunchError as exc:
        service_missing(f"no Java runtime for a broker of the run's own: {exc}")
    command = [
        sys.executable,
        "-m",
        "devtools.chaos",
        "--payments",
        "500",
        "--kills",
        "2",
        "--zombies",
        "1",
        "--unkeyed-duplicate-rate",
        "0.2",
        "--seed",
        "7",
        "--feed-s",
        "10",
        # Shorter than the defaults, so that the last actions and holds end sooner after
        # the feed and the run takes about as long as before they were fed.
        "--action-ttl-s",
        "10",
        "--authorization-hold-s",
        "20",
        "--own-broker",
        "--work-dir",
        str(tmp_path),
    ]
    run = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=child_environment(),
        timeout=HANG_GUARD_S,
        check=False,
    )
    report = f"stdout:\n{run.stdout}\nstderr (tail):\n{run.stderr[-6000:]}\nlogs: {tmp_path}"
    assert run.returncode == 0, report

    figures = _figures(run.stdout)
    assert figures["double charges"] == "0", report
    assert figures["final payments with an attempt left open"] == "0", report
    assert figures["commands the consumer group had not committed after the drain (stalled)"] == (
        "0"
    ), report
    copies = figures["payments sent again 0.05-2 s later without a key / keyed by their own id"]
    assert all(int(count) > 0 for count in copies.split(" / ")), report
    zombies = figures[_ZOMBIE_ROW].split(" / ")
    assert int(zombies[0]) >= 1, report
    assert figures["charges per payment in the acquirer's ledger (max)"] in ("0", "1"), report
    assert figures["lost payments"] == "0", report
    assert figures["payments still pending after reconciliation"] == "0", report
    assert figures["commands with a final state in the store"] == "500 / 500", report
    assert figures["payments with at least one result event in the results topic"] == "500 / 500", (
        report
    )
    kills, restarts = figures["consumer kills (SIGKILL) / restarts"].split(" / ")
    assert int(kills) >= 2, report
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
    _assert_lifecycle_exercised(figures, report)
    _assert_no_clear_number_at_rest(tmp_path, run, report)


def _numbers(value: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", value)]


def _assert_lifecycle_exercised(figures: dict[str, str], report: str) -> None:
    """The payments that do not finish at once were fed and came out every way: payers
    who paid, who were refused, who left their action to expire; authorizations captured
    (some partly) and canceled, and capture-cancel races decided. Their checks passed with
    the rest (exit code 0); these say the checks had something to judge."""
    approve, deny, abandon, late = _numbers(
        figures["payer actions fed: approve / deny / abandon / approve after expiry"]
    )
    assert approve + deny + abandon + late >= 10, report
    took, _refused = _numbers(figures["payer answers the acquirer took / refused"])
    assert took >= 1, report
    succeeded, _failed, expired = _numbers(
        figures["payer-action payments ended succeeded / failed / expired"]
    )
    assert succeeded >= 1, report
    assert expired >= 1, report
    captured, canceled, _expired, _failed, _held = _numbers(
        figures["authorizations ended captured / canceled / expired / failed / authorized"]
    )
    assert captured >= 1, report
    assert canceled >= 1, report
    assert _numbers(figures["of the captured, partially (the rest released)"])[0] >= 1, report
    by_capture, by_cancel, _neither = _numbers(
        figures["capture-cancel races won by the capture / the cancel / neither"]
    )
    assert by_capture + by_cancel >= 1, report
    assert (
        figures["authorizations whose outcome the acquirer or the order of commands contradicts"]
        == "0"
    ), report


# Every clear number the chaos feed pays with or to, and every one any e2e test sends.
CHAOS_NUMBERS = tuple(
    dict.fromkeys(
        [*(card for card, _ in PAYER_MIX), PAYER_ACTION_CARD, PAYEE_IBAN, *CLEAR_ACCOUNT_NUMBERS]
    )
)


def _assert_no_clear_number_at_rest(
    work_dir: Path, run: subprocess.CompletedProcess[str], report: str
) -> None:
    """After the run (broker stopped cleanly, every process gone), no file the run wrote
    holds a clear number: every segment of every topic (commands, results, dead letters,
    consumer offsets, cluster metadata), the store and its WAL, the vault's rows, the
    sandbox ledger, every process's log and the harness's output. The feed sent every
    number encrypted (devtools/chaos/sealed_accounts.py) with clear numbers refused, and
    every payment still ended final, so the consumers decrypted and vaulted them all.
    """
    topics = re.search(r"^topics: (\S+), (\S+)$", run.stdout, re.MULTILINE)
    assert topics is not None, report
    commands_topic, results_topic = topics.groups()
    run_id = commands_topic.split(".")[1]
    data_dir = work_dir / "kafka" / "data"

    def segments(topic: str) -> list[Path]:
        return [
            p
            for p in data_dir.glob(f"{topic}-*/*.log")
            if p.parent.name[len(topic) + 1 :].isdigit()
        ]

    # The scan reads where the run's data is: the feed's order ids in the command topic's
    # segments, the payments' events in the results', the dead-letter topic's partitions.
    assert any(order_prefix(run_id).encode() in p.read_bytes() for p in segments(commands_topic))
    assert any(b"pay_" in p.read_bytes() for p in segments(results_topic))
    assert list(data_dir.glob(f"{commands_topic}.dlq-*")), "no dead-letter partition to scan"
    # Every process's log: the acquirer's (its stderr: it may say nothing) and the
    # consumers', which do log.
    logs = list(work_dir.glob("*.log"))
    assert "acquirer.log" in {p.name for p in logs}, logs
    assert any(p.name.startswith("consumer") and p.stat().st_size > 0 for p in logs), logs

    # 1. Every file under the work dir, raw: the broker's log dir and its own logs, the
    # store and its WAL, the ledger, the account key, every process's log.
    leaks = scan_files(work_dir, CHAOS_NUMBERS)
    assert {p: n for p, n in leaks.items() if n} == {}
    assert {"paygate.db", "ledger.db"} <= set(leaks), sorted(leaks)
    # 2. The store and the ledger row by row; the vault's ciphertexts.
    store = scan_sqlite(work_dir / "paygate.db")
    assert store.rows > 0
    assert store.findings == []
    connection = sqlite3.connect(work_dir / "paygate.db")
    try:
        vaulted = connection.execute("SELECT ciphertext FROM vault_entries").fetchall()
    finally:
        connection.close()
    assert vaulted, "the vault is empty: the numbers never reached it"
    assert [c for (c,) in vaulted if numbers_in(bytes(c), CHAOS_NUMBERS)] == []
    ledger = scan_sqlite(work_dir / "ledger.db")
    assert ledger.rows > 0
    assert ledger.findings == []
    # 3. What the harness itself printed.
    assert numbers_in(run.stdout + run.stderr, CHAOS_NUMBERS) == []


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


def _by_hand(amount_minor: int) -> tuple[LedgerRefund, ...]:
    """The ledger with pay_b's charge refunded ``amount_minor`` by hand at the acquirer,
    under no refund of paygate's."""
    return (
        *_LEDGER_REFUNDS,
        LedgerRefund("re_hand", "re_hand", "ch_b", "pay_b", amount_minor, "succeeded"),
    )


_TOTALS_CHECK = "payments whose refund totals or status disagree with their refunds"
_UNFED_CHECK = "ledger refunds for refunds this run never fed"


def test_the_verdict_counts_refunds_recorded_from_the_provider_in_the_refunded_total() -> None:
    # pay_b (5.00) was refunded 2.00 by hand at its acquirer, outside paygate: recorded on
    # the payment (refunded_outside_minor), with no refund row (domain.provider_refunds).
    # A chaos run refunds nothing by hand, so the ledger's refund is one it never fed; the
    # totals agree with it.
    payments = {**_PAYMENTS, "pay_b": StoredPayment("partially_refunded", 500, 200, 0, 200)}
    facts = _with_refunds(ledger_refunds=_by_hand(200), store=StoreRefunds(dict(_STORED), payments))
    assert _violations(facts) == {_UNFED_CHECK: ["re_hand"]}
    # All of it refunded outside, and pay_a's paygate refunds beside 0 outside.
    payments = {**_PAYMENTS, "pay_b": StoredPayment("refunded", 500, 500, 0, 500)}
    facts = _with_refunds(ledger_refunds=_by_hand(500), store=StoreRefunds(dict(_STORED), payments))
    assert _violations(facts) == {_UNFED_CHECK: ["re_hand"]}


def test_the_verdict_fails_on_a_refund_outside_paygate_the_acquirer_never_made() -> None:
    # pay_b says 2.00 was refunded outside paygate, consistent with its own totals, but the
    # acquirer's ledger holds no such refund: counted from nothing (a refund of paygate's
    # counted a second time reads the same), it is a violation, not a refund.
    payments = {**_PAYMENTS, "pay_b": StoredPayment("partially_refunded", 500, 200, 0, 200)}
    checks = _violations(_with_refunds(store=StoreRefunds(dict(_STORED), payments)))
    assert checks == {
        _TOTALS_CHECK: [
            "pay_b (partially_refunded, expected partially_refunded; refunded 200, reserved 0, "
            "succeeded refunds 0 + 200 refunded outside paygate of 500; the acquirer refunded "
            "0 outside paygate)"
        ]
    }
    # And the other way: refunded by hand at the acquirer, not recorded by paygate.
    checks = _violations(_with_refunds(ledger_refunds=_by_hand(200)))
    assert checks[_TOTALS_CHECK] == [
        "pay_b (succeeded, expected succeeded; refunded 0, reserved 0, succeeded refunds 0 "
        "of 500; the acquirer refunded 200 outside paygate)"
    ]


def test_the_verdict_fails_on_a_refunded_total_the_rows_and_the_provider_do_not_explain() -> None:
    # pay_a's 10.00 is its two succeeded refunds; 1.00 more recorded from the provider
    # would put it above the capture, and a total above rows + outside is unexplained.
    payments = {
        **_PAYMENTS,
        "pay_a": StoredPayment("refunded", 1000, 1100, 0, 100),
        "pay_b": StoredPayment("partially_refunded", 500, 300, 0, 200),
    }
    by_hand = (
        *_by_hand(200),
        LedgerRefund("re_hand_a", "re_hand_a", "ch_a", "pay_a", 100, "succeeded"),
    )
    checks = _violations(
        _with_refunds(ledger_refunds=by_hand, store=StoreRefunds(dict(_STORED), payments))
    )
    assert checks[_TOTALS_CHECK] == [
        "pay_a (refunded, expected (refunded above the capture); refunded 1100, reserved 0, "
        "succeeded refunds 1000 + 100 refunded outside paygate of 1000)",
        "pay_b (partially_refunded, expected partially_refunded; refunded 300, reserved 0, "
        "succeeded refunds 0 + 200 refunded outside paygate of 500)",
    ]
    # A partial capture bounds the refunds: 3.00 of pay_b captured, all refunded outside.
    payments = {**_PAYMENTS, "pay_b": StoredPayment("refunded", 500, 300, 0, 300, 300)}
    facts = _with_refunds(ledger_refunds=_by_hand(300), store=StoreRefunds(dict(_STORED), payments))
    assert _TOTALS_CHECK not in _violations(facts)
    payments = {**_PAYMENTS, "pay_b": StoredPayment("partially_refunded", 500, 300, 0, 300, 300)}
    facts = _with_refunds(ledger_refunds=_by_hand(300), store=StoreRefunds(dict(_STORED), payments))
    assert _violations(facts)[_TOTALS_CHECK] == [
        "pay_b (partially_refunded, expected refunded; refunded 300, reserved 0, "
        "succeeded refunds 0 + 300 refunded outside paygate of 300)"
    ]


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


def test_a_refusal_is_no_final_status_of_the_payment_it_names() -> None:
    """A CreatePayment refused for reusing a key (refusal true, failed) does not make a
    succeeded payment's announced statuses contradict each other."""
    messages = PaymentMessages.bundled()
    succeeded = payment_result("pay_" + "a" * 32)
    refusal = dataclasses.replace(
        payment_result("pay_" + "a" * 32, PaymentStatus.FAILED), event_id="evt_2", refusal=True
    )
    evidence = summarize_results(
        [messages.encode_result(succeeded), messages.encode_result(refusal)], messages
    )
    assert evidence.final_statuses == {"pay_" + "a" * 32: frozenset({"succeeded"})}
    assert evidence.events == 2


# -- the faults that put two workers on one payment: checks on made-up evidence -------------


def _fault_facts(**changes: object) -> FaultFacts:
    facts = FaultFacts(
        echoed_payments={EchoKey.NONE: frozenset({"pay_a"}), EchoKey.OWN_ID: frozenset()},
        echoed_refunds={EchoKey.NONE: frozenset(), EchoKey.OWN_ID: frozenset()},
        zombie_episodes=[ZombieEpisode("consumer-01", ("pay_b",), True, ("pay_b",), 12.0)],
        min_zombies=1,
        payers={"pay_a": LATENCY_FAILS_ONCE_CARD, "pay_b": FAILS_ONCE_CARD, "pay_c": DECLINED_CARD},
        attempts=StoreAttempts({}, {"pay_a": "ch_a", "pay_b": "ch_b"}),
        stalls=[],
    )
    return dataclasses.replace(facts, **changes)  # type: ignore[arg-type]


def _with_faults(
    *, charges: dict[str, tuple[str, ...]] | None = None, **changes: object
) -> RunFacts:
    keys = charges or {"pay_a": ("pay_a-a1",), "pay_b": ("pay_b-a2",)}
    ledger = LedgerEvidence(
        max_charges_per_reference=max(map(len, keys.values())),
        double_charged_references=sum(1 for k in keys.values() if len(k) > 1),
        succeeded_charges=Counter({ref: len(k) for ref, k in keys.items()}),
        declined=frozenset({"pay_c"}),
        charged_keys=keys,
        charge_references={"ch_a": "pay_a", "ch_a2": "pay_a", "ch_b": "pay_b"},
    )
    return _facts(ledger=ledger, faults=_fault_facts(**changes))


def test_the_verdict_prints_each_fault_and_passes_when_effects_are_exact() -> None:
    verdict = judge(_with_faults())
    assert verdict.passed, verdict.render()
    figures = _figures(verdict.render())
    assert figures["payments sent again 0.05-2 s later without a key / keyed by their own id"] == (
        "1 / 0"
    )
    assert figures[_ZOMBIE_ROW] == "1 / 1 / 1"
    assert figures[
        "payments whose first call the acquirer answers 503 (of them behind latency)"
    ] == ("2 (1)")
    assert figures[
        "double charges by fault: unkeyed copy / own-id copy / zombie back-off / none of these"
    ] == ("0 / 0 / 0 / 0")
    assert "- zombie consumer-01: frozen 12.0 s, caught pay_b" in verdict.render()


def test_the_verdict_names_the_attempt_keys_of_a_double_charge_and_the_open_attempt() -> None:
    facts = _with_faults(
        charges={"pay_a": ("pay_a-a1", "pay_a-a2"), "pay_b": ("pay_b-a2",)},
        attempts=StoreAttempts(
            {"pay_a": ["pay_a-a2 (started)"]}, {"pay_a": "ch_a", "pay_b": "ch_b"}
        ),
    )
    verdict = judge(facts)
    checks = {violation.check: violation.ids for violation in verdict.violations}
    assert checks[
        "double charges in the ledger (payments charged under more than one attempt key)"
    ] == ["pay_a (pay_a-a1, pay_a-a2)"]
    assert checks["final payments with an attempt never finished (a second worker's attempt)"] == [
        "pay_a (pay_a-a2 (started))"
    ]
    figures = _figures(verdict.render())
    assert figures[
        "double charges by fault: unkeyed copy / own-id copy / zombie back-off / none of these"
    ] == ("1 / 0 / 0 / 0")


def test_the_verdict_fails_on_a_stall_too_few_zombies_and_a_foreign_charge() -> None:
    stall = StalledPartition(partition=2, committed=41, end=60, command_id="pay_b")
    facts = _with_faults(
        stalls=[stall],
        min_zombies=2,
        attempts=StoreAttempts({}, {"pay_a": "ch_b", "pay_b": "ch_b"}),
    )
    checks = _violations(facts)
    assert checks[
        "command partitions not committed to their end after the drain (a handler stalled)"
    ] == ["partition 2 at offset 41 (pay_b), 19 behind"]
    assert checks["too few zombie episodes"] == ["1 < 2"]
    assert checks[
        "succeeded in the store under a charge the ledger does not have for the payment"
    ] == ["pay_a (charge ch_b)"]
    assert _figures(judge(facts).render())[
        "commands the consumer group had not committed after the drain (stalled)"
    ] == ("19")


def _unordered_refunds(**changes: object) -> RunFacts:
    # The copy of ref_2 ("all that remains"), sent without a key, overtook ref_1: it took
    # the whole 10.00, so ref_1 (4.00) and ref_3 (0.01) were refused as exceeding. Before
    # that, a copy came before the payment existed: refused not_found, nothing stored.
    stored = {
        "ref_1": StoredRefund("ref_1", "pay_a", "failed", 400, "refund_exceeds_captured"),
        "ref_2": StoredRefund("ref_2", "pay_a", "succeeded", 1000, None),
        "ref_3": StoredRefund("ref_3", "pay_a", "failed", 1, "refund_exceeds_captured"),
        "ref_4": _STORED["ref_4"],
    }
    events = {rid: [_event(refund, "refunded")] for rid, refund in stored.items()}
    events["ref_2"].insert(0, RefundEventSeen("failed", None, "not_found", None))
    events["ref_4"] = [_event(_STORED["ref_4"], "failed")]
    return _with_refunds(
        ledger_refunds=(LedgerRefund("ref_2", "ref_2", "ch_a", "pay_a", 1000, "succeeded"),),
        store=StoreRefunds(stored, dict(_PAYMENTS)),
        events=events,
        **changes,
    )


def test_refunds_copied_without_their_key_are_judged_in_any_order() -> None:
    assert _violations(_unordered_refunds(echoed=frozenset({"ref_2"}))) == {}
    # The same outcomes for refunds that kept their order's key cannot be explained.
    checks = _violations(_unordered_refunds())
    assert "refund outcomes the order's earlier refunds cannot explain" in checks
    assert "refund events that contradict the store (the last final one, or each other)" in checks


def test_in_any_order_a_refund_refused_although_it_fits_is_still_caught() -> None:
    # ref_2 took only 6.00: ref_1's 4.00 (and ref_3's 0.01) fitted whatever the order.
    stored = {
        "ref_1": StoredRefund("ref_1", "pay_a", "failed", 400, "refund_exceeds_captured"),
        "ref_2": StoredRefund("ref_2", "pay_a", "succeeded", 600, None),
        "ref_3": _STORED["ref_3"],
        "ref_4": _STORED["ref_4"],
    }
    payments = {**_PAYMENTS, "pay_a": StoredPayment("partially_refunded", 1000, 600, 0)}
    checks = _violations(
        _with_refunds(
            ledger_refunds=(LedgerRefund("ref_2", "ref_2", "ch_a", "pay_a", 600, "succeeded"),),
            store=StoreRefunds(stored, payments),
            echoed=frozenset({"ref_1"}),
        )
    )
    assert checks["refund outcomes the order's earlier refunds cannot explain"] == [
        "ref_1 (partial: refused as exceeding, yet 400 of at least 400 fit)",
        "ref_3 (excess: refused as exceeding, yet 1 of at least 400 fit)",
    ]


# -- the faults' pure parts: the copies in the plan, the back-offs in the logs, the options --


@functools.cache
def _public_key() -> bytes:
    """One key for every plan of these tests: a 3072-bit key takes a while to make."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _plan(echo_rate: float) -> FeedPlan:
    return build_plan(
        payments=200,
        duplicate_rate=0.05,
        feed_s=5,
        run_id="t",
        rng=random.Random("1:feed"),
        messages=PaymentMessages.bundled(),
        public_key_pem=_public_key(),
        refund_share=0.5,
        refund_rng=random.Random("1:refunds"),
        echo_rate=echo_rate,
        echo_rng=random.Random("1:echoes"),
    )


def test_the_plan_puts_no_clear_account_number_on_kafka() -> None:
    plan = _plan(0.0)
    payloads = [command.payload for batch in plan.batches for command in batch]
    assert {payment.payer for payment in plan.payments} >= {DECLINED_CARD, FAILS_ONCE_CARD}
    assert [p for p in payloads if numbers_in(p, CHAOS_NUMBERS)] == []
    decoded = PaymentMessages.bundled().decode_command(plan.payments[0].payload)
    assert isinstance(decoded.payer, EncryptedAccount)
    assert isinstance(decoded.payee, EncryptedAccount)


def test_the_plan_copies_a_share_of_commands_under_another_key_soon_after() -> None:
    plan = _plan(0.5)
    kinds = Counter((type(echo.command), echo.key) for echo in plan.echoes)
    assert set(kinds) == {
        (kind, key) for kind in (PlannedPayment, PlannedRefund) for key in EchoKey
    }
    assert 60 <= kinds[PlannedPayment, EchoKey.NONE] + kinds[PlannedPayment, EchoKey.OWN_ID] <= 140
    for echo in plan.echoes:
        assert ECHO_DELAY_S[0] <= echo.delay_s <= ECHO_DELAY_S[1]
        assert echo.command in plan.batches[echo.batch]  # copied after its original's batch
        expected = None if echo.key is EchoKey.NONE else echo.command.command_id.encode()
        assert echo.kafka_key == expected
    assert plan.echoed(PlannedPayment, EchoKey.NONE) == {
        e.command.command_id
        for e in plan.echoes
        if isinstance(e.command, PlannedPayment) and e.key is EchoKey.NONE
    }
    # The copies draw from a generator of their own: the same payments either way.
    without = _plan(0.0)
    assert without.echoes == []
    assert [(p.payment_id, p.payer) for p in without.payments] == [
        (p.payment_id, p.payer) for p in plan.payments
    ]


def _log_line(msg: str, **extra: object) -> str:
    return json.dumps({"ts": "2026-01-01T00:00:10.000+00:00", "msg": msg, **extra})


def test_back_offs_are_read_from_the_consumer_log() -> None:
    line = _log_line(
        "provider certainly did not charge; retrying in 0.40s: HTTP 503 (...)",
        payment_request_id="pay_a",
        attempt=1,
    )
    backoff = parse_backoff(line, "consumer-01")
    assert backoff is not None
    start = datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC).timestamp()
    assert (backoff.payment_id, backoff.started, backoff.delay_s) == ("pay_a", start, 0.4)
    assert backoff.running_at(start + 0.39)
    assert not backoff.running_at(start + 0.4)
    day = parse_backoff(line.replace("0.40s", "86400.00s"), "consumer-01")
    assert day is not None
    assert day.running_at(start + 3600)
    for other in ("not json retrying in 1s:", _log_line("payment command handled"), "{}"):
        assert parse_backoff(other, "consumer-01") is None


def test_the_back_off_watch_reads_whole_lines_once(tmp_path: Path) -> None:
    log_path = tmp_path / "consumer-01.log"
    child = Child("consumer-01", None, log_path)  # type: ignore[arg-type]
    line = _log_line(
        "provider certainly did not charge; retrying in 5.00s: x", payment_request_id="pay_a"
    )
    log_path.write_text(line + "\n" + line[:20])  # the second line is still being written
    watch = BackoffWatch()
    assert [b.payment_id for b in watch.poll([child])] == ["pay_a"]
    with log_path.open("a") as file:
        file.write(line[20:].replace("pay_a", "pay_b") + "\n")
    assert [b.payment_id for b in watch.poll([child])] == ["pay_b"]
    assert watch.poll([child]) == []
    start = datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC).timestamp()
    assert watch.running("consumer-01", start + 1) == ["pay_a", "pay_b"]
    assert watch.running("consumer-01", start + 6) == []


def test_options_keep_a_hang_longer_than_the_provider_timeout() -> None:
    options = parse_options([])
    assert (options.provider_timeout_s, options.hang_s, options.zombies) == (4.0, 6.0, 3)
    for argv in (["--hang-s", "4"], ["--account-latency-s", "5"], ["--zombies", "-1"]):
        with pytest.raises(SystemExit):
            parse_options(argv)
    settings = chaos_settings(
        Settings(),
        bootstrap="127.0.0.1:9092",
        run_id="t",
        database_url="sqlite+aiosqlite:///x.db",
        sandbox_url="http://127.0.0.1:1",
        account_key_file=Path("account-key.pem"),
        provider_timeout_s=options.provider_timeout_s,
    )
    assert (settings.reconcile_min_age_s, settings.abandon_after_s) == (5.0, 60.0)
    assert settings.retry_max_delay_s == 5.0


async def test_the_lock_probe_tells_a_held_sqlite_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x INTEGER)")
    probe = sqlite_lock_probe(f"sqlite+aiosqlite:///{path}")
    assert probe is not None
    assert not await probe()
    holder.execute("BEGIN IMMEDIATE")  # as a consumer frozen inside a write transaction
    assert await write_locked(str(path), wait_s=0.05)
    holder.execute("ROLLBACK")
    assert not await write_locked(str(path), wait_s=0.05)
    holder.close()
    assert sqlite_lock_probe("postgresql+asyncpg://u@127.0.0.1/chaos") is None
    assert sqlite_lock_probe("sqlite+aiosqlite:///:memory:") is None
