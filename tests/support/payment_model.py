"""The reference model of a model-based test: what must be true of the store, given what
the providers actually did (tests.support.model_scripted_provider's ledger, the ground truth).

Pure: it reads a :class:`Snapshot` of the store and the ledger and returns violations, as
sentences; an empty list means the model holds.

After every step (every worker finished):

* at most one key of a payment is charged at the providers (no double charge);
* a payment stored ``succeeded``, ``partially_refunded`` or ``refunded`` stands on a captured
  charge (captured for the amount it stores), one stored ``authorized`` on a charge held and
  not captured, one stored ``canceled`` on a voided charge, and its reference is the
  charge's; one ``capturing`` or ``canceling`` on a charge that is not the other's (a
  capture and a void of one charge never both happen); one stored ``failed`` has no charge,
  or each of its charges is still to be found by the stray-charge sweep (attempt not verified
  yet) or is a recorded stray charge; so is every charge a provider made late, under a key
  paygate had closed as not charged, whatever its payment's status (its notice reopened the
  key for the sweep);
* every attempt recorded as charged or declined was charged or declined under its key;
* a refund stored ``succeeded`` succeeded at the provider, for the same amount; one stored
  ``failed`` neither succeeded nor is pending there; the provider refunded no key the store
  does not know, and no charge beyond its amount;
* a payment's ``refunded_minor`` is the sum of its succeeded refunds plus what its provider
  reported refunded outside paygate (``refunded_outside_minor``, no refund row), which is
  never more than the provider refunded of its charge under no refund of paygate's (at
  rest, exactly that), its
  ``refund_reserved_minor`` that of its open ones, and together they never exceed what was
  captured; its status says whether it is partly or wholly refunded;
* every status change the database saw follows domain.status.ALLOWED_TRANSITIONS (refunds:
  the diagram of domain.refunds), and the log of changes ends at the status stored;
* no final payment or refund still carries a claim;
* each stray charge is reversed at most once at its provider (a refund under one of the
  sweep's reversal keys that returned money or may yet, or the sweep's void), and never a
  charge a payment stands on; every stray charge the store records is the charge its
  provider holds under the key, stored ``reversed`` only once the charge keeps nothing,
  ``failed`` only if no reversal of it returned money, and no longer claimed once either;
* no provider saw a key re-used with other parameters, nor a key sent again after it had
  forgotten it (past its idempotency window: a second charge or refund under one key);
* no charge call was sent for a payment whose payer's token was deleted before its first
  call (the vault's liveness check, held numbers included).

At rest (reconcilers run with the clock far ahead and the providers healthy), besides:
everything is final, no claim and no open attempt remain, and the store matches the ledger
exactly: every charge of a failed payment was found and reversed (or its reversal refused
by the provider, for an operator), and ``refunded_minor`` is what the provider refunded;
the keys the providers hold money under (or held, before a void) are exactly the charges of
the payments stored as charged plus the stray charges found and reversed. The one thing
left to an operator is an in-doubt payment or refund older than its provider's idempotency
window (domain.resend_window): withheld, never re-sent, and then nothing may be charged or
refunded under its key.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from domain.refunds import RefundStatus
from domain.resend_window import RESEND_MARGIN
from domain.status import ALLOWED_TRANSITIONS, CAPTURED, HELD, PaymentStatus
from providers.port import ChargeStatus, ProviderRefundStatus
from tests.support.model_scripted_provider import LedgerCharge, LedgerRefund, ProviderLedger

# consumer.stray_charges reverses a stray charge under "<attempt key>-reversal".
REVERSAL_SUFFIX = "-reversal"
# ... and voids a stray authorization under "<attempt key>-void-reversal".
VOID_SUFFIX = "-void" + REVERSAL_SUFFIX
STRAY_REVERSING = "reversing"
STRAY_REVERSED = "reversed"
STRAY_FAILED = "failed"

_P = PaymentStatus
_R = RefundStatus
_PAYMENT_MOVES: dict[str | None, frozenset[str]] = {
    None: frozenset({_P.PROCESSING, _P.FAILED}),  # begin: write-ahead, or refused
    **{source.value: frozenset(t.value for t in ts) for source, ts in ALLOWED_TRANSITIONS.items()},
}
# domain.refunds: processing -> succeeded | failed | pending; pending -> succeeded | failed.
_REFUND_MOVES: dict[str | None, frozenset[str]] = {
    None: frozenset({_R.PROCESSING, _R.FAILED}),  # begin: reserved, or refused
    _R.PROCESSING: frozenset({_R.PENDING, _R.SUCCEEDED, _R.FAILED}),
    _R.PENDING: frozenset({_R.SUCCEEDED, _R.FAILED}),
    _R.SUCCEEDED: frozenset(),
    _R.FAILED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class StoredPayment:
    id: str
    status: PaymentStatus
    amount_minor: int
    refunded_minor: int
    reserved_minor: int
    provider: str | None
    provider_reference: str | None
    claim_token: str | None
    captured_minor: int | None = None  # a partial capture's amount; None: all of it
    # Of refunded_minor, what the provider reported refunded outside paygate (no refund row)
    refunded_outside_minor: int = 0

    @property
    def captured(self) -> int:
        return self.amount_minor if self.captured_minor is None else self.captured_minor


@dataclass(frozen=True, slots=True)
class StoredRefund:
    id: str
    payment_id: str
    status: RefundStatus
    amount_minor: int | None
    provider: str | None
    claim_token: str | None
    created_at: datetime | None = None  # the refund key's first call: its age


@dataclass(frozen=True, slots=True)
class StoredAttempt:
    key: str
    payment_id: str
    provider: str
    status: str
    open: bool
    verified: bool
    provider_reference: str | None
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class StoredStray:
    attempt_key: str
    payment_id: str
    status: str
    provider: str = ""
    provider_reference: str | None = None
    claim_token: str | None = None


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One row of the database's log of status changes (written by a trigger)."""

    seq: int
    table: str  # "payments" or "refunds"
    row_id: str
    old: str | None
    new: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    payments: dict[str, StoredPayment]
    refunds: dict[str, StoredRefund]
    attempts: dict[str, StoredAttempt]
    strays: dict[str, StoredStray]
    changes: list[StatusChange]


@dataclass
class ReferenceModel:
    """Checks snapshots against the ledger; remembers the statuses it last saw, so that every
    status change is checked once, in order, and the log is seen to be complete."""

    _statuses: dict[tuple[str, str], str] = field(default_factory=dict)
    _seen: int = 0
    # Payments whose payer's token was deleted before any charge call was sent for them.
    deleted_unsent: set[str] = field(default_factory=set)

    def token_deleted(self, payment_id: str, ledger: ProviderLedger) -> None:
        """The test deleted ``payment_id``'s token: from now on, if no call was sent yet,
        none may ever be."""
        if payment_id not in ledger.sent:
            self.deleted_unsent.add(payment_id)

    def after_step(self, snapshot: Snapshot, ledger: ProviderLedger) -> list[str]:
        sent = [
            f"a charge of {pid} was sent after its token was deleted"
            for pid in sorted(self.deleted_unsent & ledger.sent)
        ]
        return self._transitions(snapshot) + step_violations(snapshot, ledger) + sent

    def at_rest(self, snapshot: Snapshot, ledger: ProviderLedger) -> list[str]:
        return self.after_step(snapshot, ledger) + rest_violations(snapshot, ledger)

    def _transitions(self, snapshot: Snapshot) -> list[str]:
        found: list[str] = []
        for change in snapshot.changes:
            if change.seq <= self._seen:
                continue
            self._seen = change.seq
            row = (change.table, change.row_id)
            before = self._statuses.get(row)
            moves = _PAYMENT_MOVES if change.table == "payments" else _REFUND_MOVES
            if change.old != before:
                found.append(f"{row}: changed from {change.old} but was {before}")
            if change.new not in moves.get(change.old, frozenset()):
                found.append(f"{row}: {change.old} -> {change.new} is not an allowed transition")
            self._statuses[row] = change.new
        stored = [(("payments", p.id), p.status.value) for p in snapshot.payments.values()]
        stored += [(("refunds", r.id), r.status.value) for r in snapshot.refunds.values()]
        for row, status in stored:
            if self._statuses.get(row) != status:
                found.append(f"{row}: stored {status}, the log says {self._statuses.get(row)}")
        return found


def step_violations(s: Snapshot, ledger: ProviderLedger) -> list[str]:
    found = [f"provider saw a key re-used: {m}" for m in ledger.misuse]
    found += [
        f"{c.provider} processed charge key {c.key} again after forgetting it "
        "(re-sent past its idempotency window)"
        for c in ledger.forgotten_charges
    ]
    found += [
        f"{r.provider} processed refund key {r.key} again after forgetting it "
        "(re-sent past its idempotency window)"
        for r in ledger.forgotten_refunds
    ]
    charged: dict[str, list[LedgerCharge]] = defaultdict(list)
    for charge in ledger.charges.values():
        if charge.payment_id not in s.payments:
            found.append(f"charge {charge.key} of a payment the store does not know")
            continue
        if charge.late:
            # Not the payment's, whatever its status: a stray charge, to be found.
            found += _charge_of_failed_payment(s.payments[charge.payment_id], charge, s, ledger)
            continue
        voided_by_payment = charge.cancel_key is not None and not charge.cancel_key.endswith(
            REVERSAL_SUFFIX
        )  # a stray voided by the sweep holds nothing, and is not the payment's
        if charge.charged or voided_by_payment:
            charged[charge.payment_id].append(charge)
    for payment in s.payments.values():
        found += _payment(payment, charged[payment.id], s, ledger)
        found += _totals(payment, [r for r in s.refunds.values() if r.payment_id == payment.id])
        found += _outside(payment, s, ledger, at_rest=False)
    found += _attempts(s, ledger)
    found += _refunds(s, ledger)
    found += _provider_refunds(s, ledger)
    found += _claims_on_final_rows(s)
    found += _stray_reversals(s, ledger)
    return found


def rest_violations(s: Snapshot, ledger: ProviderLedger) -> list[str]:
    withheld = _withheld_attempts(s, ledger)
    found = [
        f"payment {p.id} left {p.status}"
        for p in s.payments.values()
        if not p.status.is_final and not any(a.payment_id == p.id for a in withheld)
    ]
    found += [
        f"refund {r.id} left {r.status}"
        for r in s.refunds.values()
        if not r.status.is_final and not _withheld_refund(r, ledger)
    ]
    found += [f"payment {p.id} keeps a claim" for p in s.payments.values() if p.claim_token]
    found += [f"refund {r.id} keeps a claim" for r in s.refunds.values() if r.claim_token]
    found += [
        f"attempt {a.key} left open" for a in s.attempts.values() if a.open and a not in withheld
    ]
    found += _money_held(s, ledger)
    for charge in ledger.charges.values():
        payment = s.payments.get(charge.payment_id)
        stray_charge = charge.late or (payment is not None and payment.status is _P.FAILED)
        if charge.charged and payment is not None and stray_charge:
            stray = s.strays.get(charge.key)
            if stray is None or stray.status not in (STRAY_REVERSED, STRAY_FAILED):
                found.append(f"{payment.status} payment {payment.id} keeps {charge.key} unreversed")
    for payment in s.payments.values():
        refunded = sum(
            pr.amount_minor
            for r in s.refunds.values()
            if r.payment_id == payment.id
            and (pr := _ledger_refund(ledger, r.id)) is not None
            and pr.status is ProviderRefundStatus.SUCCEEDED
        )
        if refunded != payment.refunded_minor - payment.refunded_outside_minor:
            found.append(
                f"payment {payment.id}: refunded_minor {payment.refunded_minor} "
                f"({payment.refunded_outside_minor} outside paygate), "
                f"the provider refunded {refunded} of paygate's refunds"
            )
        found += _outside(payment, s, ledger, at_rest=True)
    return found


def _outside(p: StoredPayment, s: Snapshot, ledger: ProviderLedger, *, at_rest: bool) -> list[str]:
    """``refunded_outside_minor`` against the ledger: what the provider refunded of the
    payment's charge under no refund of paygate's (a key the store does not know, not a
    stray charge's reversal). Checked on its own, not only through ``refunded_minor``
    less it: a write that raised both by one extra amount keeps that difference, and the
    sum with the refund rows, as they were. A notice may not have told paygate yet, so
    before rest it may count less than the ledger, never more."""
    by_hand = sum(
        pr.amount_minor
        for (_, key), pr in ledger.refunds.items()
        if p.provider_reference is not None
        and pr.charge_reference == p.provider_reference
        and pr.status is ProviderRefundStatus.SUCCEEDED
        and key not in s.refunds
        and REVERSAL_SUFFIX not in key
    )
    counted = p.refunded_outside_minor
    if counted > by_hand or (at_rest and counted != by_hand):
        return [
            f"payment {p.id}: {counted} refunded outside paygate, "
            f"the provider refunded {by_hand} of its charge under no refund of paygate's"
        ]
    return []


def _past_window(provider: str | None, began: datetime | None, ledger: ProviderLedger) -> bool:
    """A call of ``provider`` begun at ``began`` may no longer be re-sent
    (domain.resend_window.may_resend is False)."""
    window = ledger.windows.get(provider or "")
    return (
        window is not None and began is not None and ledger.now() - began >= window - RESEND_MARGIN
    )


def _withheld_attempts(s: Snapshot, ledger: ProviderLedger) -> list[StoredAttempt]:
    """Open attempts left to an operator: in doubt past their provider's window, and
    (the providers being healthy, so their status answers final) charged nothing."""
    return [
        a
        for a in s.attempts.values()
        if a.open
        and _past_window(a.provider, a.started_at, ledger)
        and (a.provider, a.key) not in ledger.charges
        and not s.payments[a.payment_id].status.is_final
    ]


def _withheld_refund(r: StoredRefund, ledger: ProviderLedger) -> bool:
    return _past_window(r.provider, r.created_at, ledger) and (_ledger_refund(ledger, r.id) is None)


def _money_held(s: Snapshot, ledger: ProviderLedger) -> list[str]:
    """The keys money is (or was, before a void) held under at the providers are exactly
    the charges of the payments stored as charged, plus the stray charges found (reversed,
    or their reversal refused for an operator): nothing charged that the store does not
    account for, and nothing accounted for twice."""
    held = {
        (c.provider, c.key)
        for c in ledger.charges.values()
        if c.charged or c.status is ChargeStatus.CANCELED
    }
    by_payments: set[tuple[str, str]] = set()
    for p in s.payments.values():
        if p.status in CAPTURED or p.status in (_P.AUTHORIZED, _P.CANCELED):
            charge = ledger.charge_by_reference(p.provider or "", p.provider_reference or "")
            if charge is not None:
                by_payments.add((charge.provider, charge.key))
    by_sweep = {
        (s.attempts[k].provider, k)
        for k, stray in s.strays.items()
        if stray.status in (STRAY_REVERSED, STRAY_FAILED) and k in s.attempts
    }
    found = [
        f"{key} is charged but no payment nor stray stands on it"
        for key in sorted(held - by_payments - by_sweep)
    ]
    found += [f"{key} is a payment's and a stray charge" for key in sorted(by_payments & by_sweep)]
    found += [
        f"{key} is accounted for but holds nothing"
        for key in sorted((by_payments | by_sweep) - held)
    ]
    return found


def _payment(
    p: StoredPayment, charges: list[LedgerCharge], s: Snapshot, ledger: ProviderLedger
) -> list[str]:
    if len(charges) > 1:
        return [f"payment {p.id} charged under {len(charges)} keys: {[c.key for c in charges]}"]
    charge = charges[0] if charges else None
    wanted = {
        _P.AUTHORIZED: ChargeStatus.AUTHORIZED,
        _P.CANCELED: ChargeStatus.CANCELED,
        **dict.fromkeys(CAPTURED, ChargeStatus.SUCCEEDED),
    }.get(p.status)
    if charge is not None and (p.status, charge.status) in (
        (_P.CAPTURING, ChargeStatus.CANCELED),
        (_P.CANCELING, ChargeStatus.SUCCEEDED),
    ):
        return [f"payment {p.id} is {p.status} but its charge is {charge.status}"]
    if p.status in CAPTURED and charge is not None and charge.captured_minor != p.captured:
        return [f"payment {p.id} captured {p.captured}, the provider {charge.captured_minor}"]
    if wanted is not None or p.status in (_P.CAPTURING, _P.CANCELING):
        if charge is None:
            return [f"payment {p.id} stored {p.status} but nothing is charged"]
        if wanted is not None and charge.status is not wanted:
            return [f"payment {p.id} stored {p.status} but its charge is {charge.status}"]
        if charge.reference != p.provider_reference:
            return [f"payment {p.id} stands on {p.provider_reference}, charged {charge.reference}"]
    if p.status is _P.FAILED and charge is not None and charge.charged:
        return _charge_of_failed_payment(p, charge, s, ledger)
    return []


def _charge_of_failed_payment(
    p: StoredPayment, charge: LedgerCharge, s: Snapshot, ledger: ProviderLedger
) -> list[str]:
    """A failed payment's charge (or any charge made late) is a stray charge: found by the
    sweep later (its attempt not verified yet), or found already and reversed as the
    provider said."""
    attempt = s.attempts.get(charge.key)
    stray = s.strays.get(charge.key)
    if attempt is None:
        return [f"{p.status} payment {p.id} charged under {charge.key}, which it has no attempt of"]
    if stray is None:
        if attempt.verified:
            return [f"{p.status} payment {p.id}: charge {charge.key} verified away, not reversed"]
        return []
    reversal = ledger.refunds.get((charge.provider, charge.key + REVERSAL_SUFFIX))
    answered = None if reversal is None else reversal.status
    expected = {STRAY_REVERSED: ProviderRefundStatus.SUCCEEDED, STRAY_FAILED: None}
    if stray.status == STRAY_REVERSED and (
        reversal is None
        or answered is not expected[STRAY_REVERSED]
        or reversal.amount_minor != charge.amount_minor
    ):
        return [f"stray charge {charge.key} stored reversed; the provider says {answered}"]
    if stray.status == STRAY_FAILED and answered is not ProviderRefundStatus.FAILED:
        return [f"stray charge {charge.key} stored not reversed; the provider says {answered}"]
    return []


def _totals(p: StoredPayment, refunds: list[StoredRefund]) -> list[str]:
    found = []
    succeeded = sum(r.amount_minor or 0 for r in refunds if r.status is _R.SUCCEEDED)
    reserved = sum(r.amount_minor or 0 for r in refunds if not r.status.is_final)
    outside = p.refunded_outside_minor
    if outside < 0 or (p.refunded_minor, p.reserved_minor) != (succeeded + outside, reserved):
        found.append(
            f"payment {p.id}: refunded/reserved {p.refunded_minor}/{p.reserved_minor}"
            f" ({outside} outside paygate), its refunds say {succeeded}/{reserved}"
        )
    if p.refunded_minor + p.reserved_minor > p.captured:
        found.append(f"payment {p.id}: refunds above what was captured, {p.captured}")
    if p.status in CAPTURED:
        expected = (
            _P.SUCCEEDED
            if p.refunded_minor == 0
            else _P.REFUNDED
            if p.refunded_minor >= p.captured
            else _P.PARTIALLY_REFUNDED
        )
        if p.status is not expected:
            found.append(f"payment {p.id} is {p.status} with {p.refunded_minor} refunded")
    elif p.refunded_minor or p.reserved_minor:
        found.append(f"payment {p.id} is {p.status} yet has refunds")
    return found


def _attempts(s: Snapshot, ledger: ProviderLedger) -> list[str]:
    found = []
    open_per_payment: dict[str, int] = defaultdict(int)
    for a in s.attempts.values():
        open_per_payment[a.payment_id] += a.open
        charge = ledger.charges.get((a.provider, a.key))
        # A charge voided since (canceled) was charged (authorized) when the attempt closed.
        held_once = charge is not None and (charge.charged or charge.cancel_key is not None)
        if a.status == "succeeded" and (
            charge is None or not held_once or charge.reference != a.provider_reference
        ):
            found.append(f"attempt {a.key} recorded as charged; the provider says otherwise")
        declined = charge is not None and charge.status is ChargeStatus.DECLINED
        if a.status == "declined" and not declined:
            found.append(f"attempt {a.key} recorded as declined; the provider says otherwise")
    found += [
        f"payment {pid} has {n} open attempts" for pid, n in open_per_payment.items() if n > 1
    ]
    return found


def _refunds(s: Snapshot, ledger: ProviderLedger) -> list[str]:
    found = []
    for r in s.refunds.values():
        pr = _ledger_refund(ledger, r.id)
        if pr is not None and (pr.provider != r.provider or pr.amount_minor != r.amount_minor):
            found.append(f"refund {r.id} sent as {pr.amount_minor} to {pr.provider}")
        answered = None if pr is None else pr.status
        if r.status is _R.SUCCEEDED and answered is not ProviderRefundStatus.SUCCEEDED:
            found.append(f"refund {r.id} stored succeeded; the provider says {answered}")
        if r.status is _R.FAILED and answered not in (None, ProviderRefundStatus.FAILED):
            found.append(f"refund {r.id} stored failed; the provider says {answered}")
    return found


def _provider_refunds(s: Snapshot, ledger: ProviderLedger) -> list[str]:
    """Every refund the providers made is one the store knows, and no charge is refunded
    beyond its amount (counting refunds still pending there)."""
    found = []
    per_charge: dict[str, int] = defaultdict(int)
    for (provider, key), pr in ledger.refunds.items():
        stored = s.refunds.get(key)
        reversed_key = key.removesuffix(REVERSAL_SUFFIX)
        if stored is None and not (key.endswith(REVERSAL_SUFFIX) and reversed_key in s.strays):
            found.append(f"{provider} refunded {key}, which the store does not know")
        if pr.status is not ProviderRefundStatus.FAILED:
            per_charge[pr.charge_reference] += pr.amount_minor
    for charge in ledger.charges.values():
        if per_charge[charge.reference] > charge.amount_minor:
            found.append(
                f"charge {charge.key} ({charge.amount_minor}) refunded "
                f"{per_charge[charge.reference]}"
            )
    return found


def _claims_on_final_rows(s: Snapshot) -> list[str]:
    found = [
        f"final payment {p.id} ({p.status}) keeps a claim"
        for p in s.payments.values()
        if p.status.is_final and p.claim_token is not None
    ]
    found += [
        f"final refund {r.id} ({r.status}) keeps a claim"
        for r in s.refunds.values()
        if r.status.is_final and r.claim_token is not None
    ]
    return found


def _stray_reversals(s: Snapshot, ledger: ProviderLedger) -> list[str]:
    """The stray charges against the ledger (see the module docstring): reversed at most
    once, never a payment's own charge, and stored as the provider holds them."""
    owned = {
        (p.provider, p.provider_reference)
        for p in s.payments.values()
        if (p.status in CAPTURED or p.status in HELD) and p.provider_reference is not None
    }
    found = []
    for charge in ledger.charges.values():
        reversals = _reversals_of(charge, ledger)
        if len(reversals) > 1:
            found.append(
                f"stray charge {charge.key} reversed {len(reversals)} times at "
                f"{charge.provider}: {reversals}"
            )
        if reversals and (charge.provider, charge.reference) in owned:
            found.append(f"{charge.key}, a payment's own charge, reversed as a stray charge")
    for key, stray in s.strays.items():
        recorded = ledger.charges.get((stray.provider, key))
        if recorded is None or recorded.reference != stray.provider_reference:
            found.append(f"stray charge {key} recorded; {stray.provider} holds no such charge")
            continue
        if stray.status == STRAY_REVERSED and _keeps_money(recorded, ledger):
            found.append(f"stray charge {key} stored reversed; {stray.provider} still holds it")
        if stray.status == STRAY_FAILED and _reversals_of(recorded, ledger):
            found.append(f"stray charge {key} stored not reversed; {stray.provider} reversed it")
        if stray.status != STRAY_REVERSING and stray.claim_token is not None:
            found.append(f"final stray charge {key} ({stray.status}) keeps a claim")
    return found


def _reversals_of(charge: LedgerCharge, ledger: ProviderLedger) -> list[str]:
    """The keys of the sweep's reversals of ``charge`` that returned money or may yet:
    refunds under its reversal keys not failed (pending included), and its void."""
    plain = charge.key + REVERSAL_SUFFIX
    refunds = [
        key
        for (provider, key), refund in ledger.refunds.items()
        if provider == charge.provider
        and (key == plain or key.startswith(plain + "-"))
        and refund.status is not ProviderRefundStatus.FAILED
    ]
    voided = charge.cancel_key is not None and charge.cancel_key == charge.key + VOID_SUFFIX
    return refunds + ([charge.key + VOID_SUFFIX] if voided else [])


def _keeps_money(charge: LedgerCharge, ledger: ProviderLedger) -> bool:
    """Whether ``charge`` still holds money: held, or captured and not refunded in full."""
    if charge.status is ChargeStatus.AUTHORIZED:
        return True
    if charge.status is not ChargeStatus.SUCCEEDED:
        return False
    refunded = sum(
        r.amount_minor
        for (provider, _), r in ledger.refunds.items()
        if provider == charge.provider
        and r.charge_reference == charge.reference
        and r.status is ProviderRefundStatus.SUCCEEDED
    )
    return refunded < charge.captured_minor


def _ledger_refund(ledger: ProviderLedger, key: str) -> LedgerRefund | None:
    return next((pr for (_, k), pr in ledger.refunds.items() if k == key), None)


def describe(violations: Iterable[str]) -> str:
    return "\n".join(f"  - {v}" for v in violations)
