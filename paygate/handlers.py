"""The command handlers and their reconcilers as the settings make them: one definition for
the consumer and for ``paygate reconcile``, so the two settle payments, refunds, captures and
cancels (and find expired authorizations) the same way, and neither can leave one out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from consumer.authorization_expiry import AuthorizationExpiry
from consumer.cancel_handler import CancelCommandHandler
from consumer.cancel_reconciler import CancelReconciler
from consumer.capture_handler import CaptureCommandHandler
from consumer.capture_reconciler import CaptureReconciler
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.payment_reconciler import PaymentReconciler
from consumer.refund_events import RefundEvents
from consumer.refund_handler import RefundCommandHandler
from consumer.refund_reconciler import RefundReconciler
from consumer.stray_charges import StraySweep
from paygate.settings import Settings
from persistence.database import Database
from providers.registry import Providers
from providers.routing import Router
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from vault.vault import Vault


@dataclass(frozen=True, slots=True)
class Handlers:
    payments: PaymentCommandHandler
    refunds: RefundCommandHandler
    captures: CaptureCommandHandler
    cancels: CancelCommandHandler
    payment_reconciler: PaymentReconciler
    refund_reconciler: RefundReconciler
    capture_reconciler: CaptureReconciler
    cancel_reconciler: CancelReconciler
    authorization_expiry: AuthorizationExpiry


def handlers_of(
    settings: Settings,
    *,
    db: Database,
    providers: Providers,
    router: Router,
    messages: PaymentMessages,
    metrics: Metrics,
    vault: Vault,
) -> Handlers:
    """Every handler and reconciler of the consumer, over ``db``; ``vault`` reveals the
    accounts of payments for their provider calls."""
    store = db.payments
    min_age = timedelta(seconds=settings.reconcile_min_age_s)
    retry_policy = settings.retry_policy()
    events = PaymentEvents(messages, settings.results_topic)
    payments = PaymentCommandHandler(
        store=store,
        providers=providers,
        router=router,
        events=events,
        account_key=settings.account_key,
        metrics=metrics,
        abandon_after=timedelta(seconds=settings.abandon_after_s),
        retry_policy=retry_policy,
        vault=vault,
        resend_limit=settings.resend_limit,
    )
    refund_store = db.refunds
    refunds = RefundCommandHandler(
        store=refund_store,
        providers=providers,
        events=RefundEvents(messages, settings.results_topic),
        metrics=metrics,
        retry_policy=retry_policy,
    )
    capture_store = db.captures
    captures = CaptureCommandHandler(
        store=capture_store,
        providers=providers,
        events=events,
        metrics=metrics,
        retry_policy=retry_policy,
    )
    cancels = CancelCommandHandler(
        store=db.cancels,
        providers=providers,
        events=events,
        metrics=metrics,
        retry_policy=retry_policy,
    )
    sweep = StraySweep(
        store=db.strays,
        providers=providers,
        metrics=metrics,
        settle_after=timedelta(seconds=settings.stray_settle_s),
    )
    return Handlers(
        payments=payments,
        refunds=refunds,
        captures=captures,
        cancels=cancels,
        payment_reconciler=PaymentReconciler(
            store=store,
            handler=payments,
            metrics=metrics,
            min_age=min_age,
            sweep=sweep,
            waiting_max=timedelta(seconds=settings.reconcile_waiting_max_s),
        ),
        refund_reconciler=RefundReconciler(
            store=refund_store, handler=refunds, metrics=metrics, min_age=min_age
        ),
        capture_reconciler=CaptureReconciler(
            store=capture_store, handler=captures, metrics=metrics, min_age=min_age
        ),
        cancel_reconciler=CancelReconciler(
            store=db.cancels, handler=cancels, metrics=metrics, min_age=min_age
        ),
        authorization_expiry=AuthorizationExpiry(
            store=db.expiries, providers=providers, events=events, min_age=min_age
        ),
    )
