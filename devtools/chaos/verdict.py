"""The checks of a chaos run and the table it prints.

Every figure is computed from the evidence alone (ledger, store, results topic, the
harness's own counts). A violation names the payments concerned, so the consumer logs and
the ledger can be searched for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from devtools.chaos.evidence import FINAL_STATUSES, LedgerEvidence, ResultsEvidence
from devtools.chaos.fault_verdict import FaultFacts, judge_faults
from devtools.chaos.lifecycle_verdict import LifecycleFacts, judge_lifecycle
from devtools.chaos.refund_verdict import RefundFacts, judge_refunds
from devtools.chaos.report import SHOWN_IDS, Verdict, Violation

__all__ = ["RunFacts", "Verdict", "Violation", "judge"]


@dataclass(frozen=True, slots=True)
class RunFacts:
    payment_ids: Sequence[str]
    min_kills: int
    ledger: LedgerEvidence
    statuses: dict[str, str]  # store: payment id -> status, for the ids it has
    results: ResultsEvidence
    kills: int
    restarts: int
    broker_restarts: int | None  # None: skipped, the broker is not ours to restart
    wall_s: float
    consumer_exit_codes: dict[str, int]  # after the final SIGTERM
    # Consumers that exited without being told to (each was replaced). Not an effect
    # violation by itself, but worth reading: a consumer should ride out a broker restart.
    crashes: Sequence[str] = ()
    final_when_faults_stopped: int | None = None
    refunds: RefundFacts | None = None  # None: a run without refunds
    faults: FaultFacts | None = None  # None: judged without the copies, zombies and stalls
    # None: a run without payer actions or authorizations
    lifecycle: LifecycleFacts | None = None


def judge(facts: RunFacts) -> Verdict:
    verdict = Verdict()
    ids = list(facts.payment_ids)
    total = len(ids)
    ledger, statuses, results = facts.ledger, facts.statuses, facts.results

    double_charged = [
        f"{ref} ({', '.join(ledger.charged_keys.get(ref, ())) or f'{n} charges'})"
        for ref, n in ledger.succeeded_charges.items()
        if n > 1
    ]
    lifecycle = facts.lifecycle
    # Payer actions and authorizations end in outcomes of their own (canceled, expired,
    # still held), judged on their raw status and every event (lifecycle_verdict).
    later = set() if lifecycle is None else {*lifecycle.actions, *lifecycle.authorizations}
    lost = [pid for pid in ids if pid not in statuses]
    pending = [
        pid
        for pid in ids
        if pid in statuses and pid not in later and statuses[pid] not in FINAL_STATUSES
    ]
    if lifecycle is not None:
        pending += lifecycle.unfinished()
    without_event = [
        pid
        for pid in ids
        if not results.final_statuses.get(pid)
        and (pid not in later or not results.payment_events.get(pid))
    ]
    broker = (
        "skipped (KAFKA_BOOTSTRAP_SERVERS: not our broker)"
        if facts.broker_restarts is None
        else str(facts.broker_restarts)
    )
    verdict.rows = [
        (
            "charges per payment in the acquirer's ledger (max)",
            str(ledger.max_charges_per_reference),
            "≤ 1",
        ),
        ("double charges", str(ledger.double_charged_references), "0"),
        (
            "commands with a final state in the store",
            f"{total - len(lost) - len(pending)} / {total}",
            "all",
        ),
        ("lost payments", str(len(lost)), "0"),
        ("payments still pending after reconciliation", str(len(pending)), "0"),
        (
            "payments with at least one result event in the results topic",
            f"{total - len(without_event)} / {total}",
            "all",
        ),
        (
            "duplicate result events (same eventId seen more than once)",
            str(results.duplicate_events),
            "printed",
        ),
    ]
    if facts.refunds is not None:
        judge_refunds(verdict, facts.refunds, ledger, ids)
    if facts.faults is not None:
        judge_faults(verdict, facts.faults, ledger, statuses, ids)
    if lifecycle is not None:
        judge_lifecycle(verdict, lifecycle, ledger, results.payment_events)
    verdict.rows += [
        (
            "consumer kills (SIGKILL) / restarts",
            f"{facts.kills} / {facts.restarts}",
            f"≥ {facts.min_kills}",
        ),
        ("broker restarts", broker, "1"),
        ("wall time", f"{facts.wall_s:.1f} s", "printed"),
    ]

    if ledger.max_charges_per_reference > 1 or ledger.double_charged_references:
        # The ids come from the charges list, each with the attempt keys charged; the
        # counts above from /admin/stats.
        verdict.check(
            double_charged or ["(see /admin/stats)"],
            "double charges in the ledger (payments charged under more than one attempt key)",
        )
    verdict.check(lost, "lost payments (fed, but not in the store)")
    verdict.check(pending, "payments still pending after reconciliation")
    verdict.check(without_event, "payments without a final result event")
    _cross_check(verdict, facts)
    if facts.kills < facts.min_kills:
        verdict.check([f"{facts.kills} < {facts.min_kills}"], "too few consumer kills")
    if facts.broker_restarts is not None and facts.broker_restarts != 1:
        verdict.check([str(facts.broker_restarts)], "broker restarts other than 1")
    verdict.check(
        [f"{name} exited {code}" for name, code in facts.consumer_exit_codes.items() if code],
        "consumers that did not exit 0 on SIGTERM",
    )
    if results.undecodable:
        verdict.check([f"{results.undecodable} events"], "undecodable result events")
    if facts.final_when_faults_stopped is not None:
        # How much of the run the faults covered: the rest was processed in calm water.
        verdict.notes.append(
            f"- payments already final when the faults stopped: "
            f"{facts.final_when_faults_stopped} / {total}"
        )
    if facts.crashes:
        verdict.notes.append(f"- consumers that exited by themselves: {len(facts.crashes)}")
        verdict.notes += [f"    {crash}" for crash in facts.crashes[:SHOWN_IDS]]
    return verdict


def _cross_check(verdict: Verdict, facts: RunFacts) -> None:
    """The store's outcome must be the acquirer's, and the events must say the same."""
    ledger, statuses = facts.ledger, facts.statuses
    ours = set(facts.payment_ids)
    verdict.check(
        [p for p in ledger.succeeded_charges if p in ours and statuses.get(p) != "succeeded"],
        "charged by the acquirer but not succeeded in the store",
    )
    verdict.check(
        [
            p
            for p in ledger.declined
            if statuses.get(p) == "succeeded" and not ledger.succeeded_charges[p]
        ],
        "declined by the acquirer but succeeded in the store",
    )
    verdict.check(
        [p for p, s in statuses.items() if s == "succeeded" and not ledger.succeeded_charges[p]],
        "succeeded in the store without a charge in the ledger",
    )
    verdict.check(
        [
            p
            for p, announced in facts.results.final_statuses.items()
            if p in ours and announced != {statuses.get(p)}
        ],
        "result events that contradict the store (or each other)",
    )
    verdict.check(
        sorted((set(ledger.succeeded_charges) | ledger.declined | set(ledger.charges)) - ours),
        "ledger charges for payments this run never fed",
    )
