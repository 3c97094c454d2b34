"""Workers for a model-based test: the real handlers and reconcilers over the real stores,
and the vault, built as one consumer process builds them, with a test clock and every store
write made a checkpoint of the interleaving under way (see tests.support.interleaving).

The stray-charge sweep's writes stop likewise, its claim's steps included: the record of a
stray charge found (which takes the claim), the claim taken by a later pass, its renewal
before each provider call, the re-try stamp, the reversal key noted, the answer recorded
(fenced by the claim's token) and the claim given up; and a pass stops once it has read its
candidates, before it writes anything (two passes read the same stray charges there). With
the provider's own stops (a call sent, its answer back), a sweeper can be held at any of
them while another runs: two sweeps race at every step of the claim. The stray store tells a
tests.support.stray_claim_watch what its claim writes answered."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.cancel_handler import CancelCommandHandler
from consumer.cancel_reconciler import CancelReconciler
from consumer.capture_handler import CaptureCommandHandler
from consumer.capture_reconciler import CaptureReconciler
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.payment_reconciler import PaymentReconciler
from consumer.provider_notices import NoticeRecorder
from consumer.refund_events import RefundEvents
from consumer.refund_handler import RefundCommandHandler
from consumer.refund_reconciler import RefundReconciler
from consumer.stray_charges import StraySweep
from domain.retry import RetryPolicy
from persistence.cancel_store import CancelStore
from persistence.capture_store import CaptureStore
from persistence.payment_store import PaymentStore
from persistence.provider_refund_store import ProviderRefundStore
from persistence.refund_store import RefundStore
from providers.registry import Providers
from providers.routing import Router
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.interleaving import Gate
from tests.support.stray_claim_watch import StrayClaimWatch, WatchedStrayStore
from tests.support.vault_keys import KEK_1
from vault.kek import LocalKeyEncryptionKeys
from vault.recent_numbers import RecentNumbers
from vault.rows import VaultRows
from vault.vault import Vault

ACCOUNT_KEY = b"model-test-fingerprint-key"
LEASE = timedelta(seconds=30)
MIN_AGE = timedelta(seconds=10)  # reconcilers leave younger work alone
STRAY_SETTLE = timedelta(seconds=120)  # the sweep asks about closed attempts once this old
HELD_NUMBERS = 64  # more than one example makes: every number is held until its reveal
RETRIES = RetryPolicy(max_attempts=2, base_delay_s=0.001, max_delay_s=0.001)

_MESSAGES = PaymentMessages.bundled()
_EVENTS = PaymentEvents(_MESSAGES, "payments.results")
_REFUND_EVENTS = RefundEvents(_MESSAGES, "payments.results")

_WRITES = ("begin", "claim", "renew", "release", "finish", "next_attempt", "schedule_retry")
_STRAY_WRITES = (
    "mark_own_charges",
    "mark_verified",
    "close_unverified",
    "ask_again_at",
    "reopen",
    "record_found",
    # The reversal's claim: taken, renewed before each call, its fenced writes, given up.
    "claim_reversal",
    "renew_reversal",
    "reverse_again_at",
    "note_reversal_key",
    "record_reversal",
    "release_reversal",
)

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Worker:
    """What one consumer process runs; its stores share one writer queue, as there."""

    payments: PaymentCommandHandler
    refunds: RefundCommandHandler
    captures: CaptureCommandHandler
    cancels: CancelCommandHandler
    payment_reconciler: PaymentReconciler  # with the stray-charge sweep
    sweep: StraySweep  # the same sweep, for a pass of its own
    refund_reconciler: RefundReconciler
    capture_reconciler: CaptureReconciler
    cancel_reconciler: CancelReconciler
    # The process's vault, holding the numbers it tokenized moments ago (as the consumer's
    # intake does): a payment's provider call reveals its vaulted payer through it.
    vault: Vault
    notices: NoticeRecorder  # what the facade runs for a provider's signed notification


def build_worker(
    engine: AsyncEngine,
    clock: Callable[[], datetime],
    providers: Providers,
    router: Router,
    gate: Gate,
    watch: StrayClaimWatch,
) -> Worker:
    metrics = Metrics()
    store = _stop_before_writes(PaymentStore(engine, clock, claim_lease=LEASE), gate)
    refund_store = _stop_before_writes(
        RefundStore(engine, store.writes, clock, claim_lease=LEASE), gate
    )
    capture_store = _stop_before_writes(
        CaptureStore(engine, store.writes, clock, claim_lease=LEASE), gate
    )
    cancel_store = _stop_before_writes(
        CancelStore(engine, store.writes, clock, claim_lease=LEASE), gate
    )
    stray_store = _stop_before_writes(
        _stop_after_reads(
            WatchedStrayStore(engine, store.writes, clock, claim_lease=LEASE, watch=watch),
            gate,
            ("candidates",),
        ),
        gate,
        _STRAY_WRITES,
    )
    vault = Vault(
        VaultRows(engine, store.writes),
        LocalKeyEncryptionKeys.from_text(KEK_1),
        ACCOUNT_KEY,
        clock=clock,
        recent=RecentNumbers(capacity=HELD_NUMBERS),
    )
    payments = PaymentCommandHandler(
        store=store,
        providers=providers,
        router=router,
        events=_EVENTS,
        account_key=ACCOUNT_KEY,
        metrics=metrics,
        retry_policy=RETRIES,
        clock=clock,
        vault=vault,
    )
    refunds = RefundCommandHandler(
        store=refund_store,
        providers=providers,
        events=_REFUND_EVENTS,
        metrics=metrics,
        retry_policy=RETRIES,
        clock=clock,
    )
    captures = CaptureCommandHandler(
        store=capture_store,
        providers=providers,
        events=_EVENTS,
        metrics=metrics,
        retry_policy=RETRIES,
        clock=clock,
    )
    cancels = CancelCommandHandler(
        store=cancel_store,
        providers=providers,
        events=_EVENTS,
        metrics=metrics,
        retry_policy=RETRIES,
        clock=clock,
    )
    sweep = StraySweep(
        store=stray_store,
        providers=providers,
        metrics=metrics,
        settle_after=STRAY_SETTLE,
        clock=clock,
    )
    return Worker(
        payments=payments,
        refunds=refunds,
        captures=captures,
        cancels=cancels,
        payment_reconciler=PaymentReconciler(
            store=store,
            handler=payments,
            metrics=metrics,
            min_age=MIN_AGE,
            sweep=sweep,
            clock=clock,
        ),
        sweep=sweep,
        refund_reconciler=RefundReconciler(
            store=refund_store, handler=refunds, metrics=metrics, min_age=MIN_AGE, clock=clock
        ),
        capture_reconciler=CaptureReconciler(
            store=capture_store, handler=captures, metrics=metrics, min_age=MIN_AGE, clock=clock
        ),
        cancel_reconciler=CancelReconciler(
            store=cancel_store, handler=cancels, metrics=metrics, min_age=MIN_AGE, clock=clock
        ),
        vault=vault,
        notices=NoticeRecorder(
            store=store,
            events=_EVENTS,
            strays=stray_store,
            refunds=ProviderRefundStore(store.writes, clock),
            clock=clock,
        ),
    )


def _stop_after_reads(store: S, gate: Gate, names: tuple[str, ...]) -> S:
    """``store`` with each read method of ``names`` stopping at a checkpoint once it has
    read (``<store>.<name> read``): where two workers have read the same rows and written
    nothing yet."""
    for name in names:
        method = getattr(store, name)
        label = f"{type(store).__name__}.{name} read"

        async def stopped(*args: Any, _method: Any = method, _label: str = label, **kw: Any) -> Any:
            found = await _method(*args, **kw)
            await gate.checkpoint(_label)
            return found

        setattr(store, name, stopped)
    return store


def _stop_before_writes(store: S, gate: Gate, names: tuple[str, ...] = _WRITES) -> S:
    """``store`` with each write method (of ``names``, where it has one) stopping at a
    checkpoint first; the store's own code runs unchanged."""
    for name in names:
        method = getattr(store, name, None)
        if method is None:
            continue
        label = f"{type(store).__name__}.{name}"

        async def stopped(*args: Any, _method: Any = method, _label: str = label, **kw: Any) -> Any:
            await gate.checkpoint(_label)
            return await _method(*args, **kw)

        setattr(store, name, stopped)
    return store
