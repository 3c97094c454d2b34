"""The checks and figures of the faults that put two workers on one payment.

Copies sent without their order's key, zombie consumers, and acquirers that are slow, fail
once, or ask an absurd ``Retry-After``. The effects are judged where every payment's are
(:mod:`devtools.chaos.verdict`: at most one charge per payment, the store agreeing with the
ledger); this module adds what these faults leave behind besides, and counts, for every
double charge, which of them the payment was exposed to.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from devtools.chaos.attempt_evidence import StoreAttempts
from devtools.chaos.evidence import LedgerEvidence
from devtools.chaos.feed_plan import EchoKey
from devtools.chaos.payers import RETRY_AFTER_CARDS, fails_first, has_latency
from devtools.chaos.report import Verdict
from devtools.chaos.stall_evidence import StalledPartition
from devtools.chaos.zombie import ZombieEpisode


@dataclass(frozen=True, slots=True)
class FaultFacts:
    echoed_payments: Mapping[EchoKey, frozenset[str]]  # payment ids copied, by the copy's key
    echoed_refunds: Mapping[EchoKey, frozenset[str]]  # refund ids copied, by the copy's key
    zombie_episodes: Sequence[ZombieEpisode]
    min_zombies: int
    payers: Mapping[str, str]  # payment id -> the sandbox test number it was paid with
    attempts: StoreAttempts
    stalls: Sequence[StalledPartition]  # command partitions left behind after the drain
    # consumers frozen holding the SQLite store's write lock, thawed at once (no episode)
    lock_holders: int = 0


def judge_faults(
    verdict: Verdict,
    facts: FaultFacts,
    ledger: LedgerEvidence,
    statuses: Mapping[str, str],
    payment_ids: Sequence[str],
) -> None:
    """Add the faults' figures to ``verdict`` and a violation for each broken check."""
    episodes = facts.zombie_episodes
    payers = facts.payers
    retry_after = {
        header: sum(1 for pid in payment_ids if payers.get(pid) == card)
        for card, header in RETRY_AFTER_CARDS.items()
    }
    latency = [pid for pid in payment_ids if has_latency(payers.get(pid, ""))]
    latency_first_503 = sum(1 for pid in latency if fails_first(payers[pid]))
    fails_once = [pid for pid in payment_ids if fails_first(payers.get(pid, ""))]
    # Each succeeds on its second call: a failure means the retry never came (the
    # reconciler abandoned it during a stall, say). Allowed, nothing was charged: printed.
    failed_after_503 = Counter(
        RETRY_AFTER_CARDS.get(payers[pid], "none")
        for pid in fails_once
        if statuses.get(pid) == "failed"
    )
    verdict.rows += [
        (
            "payments sent again 0.05-2 s later without a key / keyed by their own id",
            _by_key(facts.echoed_payments),
            "printed",
        ),
        (
            "refunds sent again 0.05-2 s later without a key / keyed by their own id",
            _by_key(facts.echoed_refunds),
            "printed",
        ),
        (
            "payments whose first call the acquirer answers 503 (of them behind latency)",
            f"{len(fails_once)} ({latency_first_503})",
            "printed",
        ),
        (
            "of them, ended failed although the second call succeeds, by Retry-After "
            + " / ".join([*RETRY_AFTER_CARDS.values(), "none"]),
            " / ".join(str(failed_after_503[h]) for h in [*RETRY_AFTER_CARDS.values(), "none"]),
            "printed",
        ),
        ("payments behind acquirer latency", str(len(latency)), "printed"),
        (
            "payments whose 503 asks Retry-After " + " / ".join(retry_after),
            " / ".join(str(count) for count in retry_after.values()),
            "printed",
        ),
        (
            "zombie episodes (SIGSTOP past the session, SIGCONT after the rebalance) / "
            "caught in a retry back-off / another consumer calling the acquirer at SIGCONT",
            f"{len(episodes)} / {sum(1 for e in episodes if e.in_backoff)}"
            f" / {sum(1 for e in episodes if e.overlapped)}",
            f"≥ {facts.min_zombies}",
        ),
        (
            "double charges by fault: unkeyed copy / own-id copy / zombie back-off / none of these",
            " / ".join(str(n) for n in _double_charges_by_fault(facts, ledger)),
            "printed",
        ),
        (
            "final payments with an attempt left open",
            str(len(facts.attempts.open_on_final)),
            "0",
        ),
        (
            "commands the consumer group had not committed after the drain (stalled)",
            str(sum(stall.behind for stall in facts.stalls)),
            "0",
        ),
    ]
    verdict.check(
        [f"{pid} ({', '.join(keys)})" for pid, keys in facts.attempts.open_on_final.items()],
        "final payments with an attempt never finished (a second worker's attempt)",
    )
    verdict.check(
        [
            f"{pid} (charge {reference})"
            for pid, reference in facts.attempts.charge_references.items()
            if reference is None or ledger.charge_references.get(reference) != pid
        ],
        "succeeded in the store under a charge the ledger does not have for the payment",
    )
    verdict.check(
        [str(stall) for stall in facts.stalls],
        "command partitions not committed to their end after the drain (a handler stalled)",
    )
    if len(episodes) < facts.min_zombies:
        verdict.check([f"{len(episodes)} < {facts.min_zombies}"], "too few zombie episodes")
    if facts.lock_holders:
        verdict.notes.append(
            f"- zombie aims that froze a consumer holding the store's write lock (thawed at "
            f"once, aimed again): {facts.lock_holders}"
        )
    for episode in episodes:
        caught = ", ".join(episode.in_backoff) or "no payment in a back-off"
        also = f"; another consumer calling for {', '.join(episode.overlapped)}"
        verdict.notes.append(
            f"- zombie {episode.victim}: frozen {episode.frozen_s:.1f} s, caught {caught}"
            + (also if episode.overlapped else "")
            + ("" if episode.rebalanced else "; the group had not dropped it")
        )


def _by_key(echoed: Mapping[EchoKey, frozenset[str]]) -> str:
    return f"{len(echoed.get(EchoKey.NONE, ()))} / {len(echoed.get(EchoKey.OWN_ID, ()))}"


def _double_charges_by_fault(facts: FaultFacts, ledger: LedgerEvidence) -> list[int]:
    """Double-charged payments exposed to each fault; one exposed to two counts in both."""
    doubled = {ref for ref, count in ledger.succeeded_charges.items() if count > 1}
    exposures = [
        facts.echoed_payments.get(EchoKey.NONE, frozenset()),
        facts.echoed_payments.get(EchoKey.OWN_ID, frozenset()),
        {pid for episode in facts.zombie_episodes for pid in episode.in_backoff},
    ]
    counts = [len(doubled & exposed) for exposed in exposures]
    counts.append(len(doubled - set().union(*exposures)))
    return counts
