"""The verdict of an outage run: what failed, what was charged twice, how long it took.

Required: no payment failed for the outage (every one rode it out on the retry budget), none
charged twice, none lost or left pending, the consumer stopping cleanly. A payment whose
call was in flight when the acquirer was SIGKILLed is in doubt; if the acquirer never
recorded it, the reconciler fails it as never received. That is the in-doubt machinery
working, not the retry budget giving up, so it is counted on a line of its own; its ledger
must hold no charge for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from devtools.chaos.evidence import FINAL_STATUSES, LedgerEvidence
from devtools.chaos.report import Verdict
from devtools.outage.evidence import ConsumerCounts, Failure


@dataclass(frozen=True, slots=True)
class OutageFacts:
    payment_ids: list[str]
    statuses: dict[str, str]  # charge outcome by payment id; absent: not in the store
    failures: list[Failure]
    ledger: LedgerEvidence
    down_s: float  # measured: from the acquirer's going down to its listening again
    backlog_at_return: int  # fed but not final when it came back
    drain_s: float | None  # its return to the last payment fed before it (not cut) final
    counts: ConsumerCounts | None
    consumer_exit_codes: dict[str, int]
    wall_s: float


def judge(facts: OutageFacts) -> Verdict:
    verdict = Verdict()
    ids = facts.payment_ids
    total = len(ids)
    succeeded = [pid for pid in ids if facts.statuses.get(pid) == "succeeded"]
    cut = [f for f in facts.failures if f.cut_at_the_kill]
    failed = [f for f in facts.failures if not f.cut_at_the_kill]
    lost = [pid for pid in ids if pid not in facts.statuses]
    open_ = [
        pid for pid in ids if pid in facts.statuses and facts.statuses[pid] not in FINAL_STATUSES
    ]
    charged = facts.ledger.succeeded_charges
    uncharged_successes = [pid for pid in succeeded if charged[pid] == 0]
    unrecorded_charges = [
        pid for pid in charged if charged[pid] and facts.statuses.get(pid) != "succeeded"
    ]
    cut_but_charged = [f.payment_id for f in cut if charged[f.payment_id]]
    bad_exits = [f"{name} ({code})" for name, code in facts.consumer_exit_codes.items() if code]

    rows = verdict.rows
    rows.append(("payments fed", str(total), "printed"))
    rows.append(("payments succeeded", f"{len(succeeded)} / {total}", "all but those cut"))
    rows.append(
        ("payments failed (retry budget ran out, or any other reason)", str(len(failed)), "0")
    )
    rows.append(
        (
            "payments failed because the SIGKILL cut their call (never received, not charged)",
            str(len(cut)),
            "printed",
        )
    )
    rows.append(("lost payments (fed, not in the store)", str(len(lost)), "0"))
    rows.append(("payments not final", str(len(open_)), "0"))
    rows.append(("double charges", str(facts.ledger.double_charged_references), "0"))
    rows.append(
        (
            "charges per payment in the acquirer's ledger (max)",
            str(facts.ledger.max_charges_per_reference),
            "≤ 1",
        )
    )
    rows.append(("acquirer down (measured)", f"{facts.down_s:.1f} s", "printed"))
    rows.append(("payments not final when it came back", str(facts.backlog_at_return), "printed"))
    drain = "not drained" if facts.drain_s is None else f"{facts.drain_s:.1f} s"
    rows.append(
        ("time to drain (its return to the last of those final, cut ones aside)", drain, "printed")
    )
    if facts.counts is not None:
        rows.append(("provider calls retried", str(facts.counts.retries), "printed"))
        rows.append(("circuit opened", str(facts.counts.circuit_opened), "printed"))
    rows.append(("wall time", f"{facts.wall_s:.1f} s", "printed"))

    verdict.check([f.payment_id for f in failed], "failed payments")
    verdict.check(lost, "payments fed but not in the store")
    verdict.check(open_, "payments not final")
    verdict.check([pid for pid, n in charged.items() if n > 1], "payments charged more than once")
    verdict.check(uncharged_successes, "succeeded in the store, no charge in the ledger")
    verdict.check(unrecorded_charges, "charged in the ledger, not succeeded in the store")
    verdict.check(cut_but_charged, "failed as never received, yet charged in the ledger")
    verdict.check(bad_exits, "consumers that did not exit 0 on SIGTERM")
    if facts.drain_s is None:
        verdict.check(["drain"], "payments fed before the acquirer came back never all final")
    for failure in failed[:5]:
        verdict.notes.append(f"- {failure.payment_id}: {failure.code}: {failure.message}")
    return verdict
