"""``paygate reconcile``: one reconciliation pass on demand, payments then refunds, as JSON.

Outcomes it records go to the outbox; a running consumer's relay publishes them.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import timedelta

from consumer.reconciler import PAGE_SIZE, Reconciler
from consumer.refund_reconciler import RefundReconciler
from consumer.refund_results import RefundEvents
from consumer.results import ResultEvents
from paygate.database import engine_for
from paygate.metrics import Metrics
from paygate.providers import build_providers
from paygate.settings import Settings
from persistence.engine import create_schema
from persistence.payment_store import PaymentStore
from persistence.refund_store import RefundStore
from schemas.payments import PaymentMessages


async def reconcile_once(settings: Settings) -> dict[str, int]:
    engine = engine_for(settings)
    providers = build_providers(settings)
    try:
        await create_schema(engine)
        await providers.start_all()
        store = PaymentStore(engine)
        messages = PaymentMessages.bundled()
        min_age = timedelta(seconds=settings.reconcile_min_age_s)
        abandon_after = timedelta(seconds=settings.abandon_after_s)
        reconciler = Reconciler(
            store=store,
            providers=providers,
            events=ResultEvents(messages, settings.results_topic),
            metrics=Metrics(),
            min_age=min_age,
            abandon_after=abandon_after,
        )
        total: dict[str, int] = {"checked": 0, "resolved": 0, "abandoned": 0, "still_pending": 0}
        while True:
            report = asdict(await reconciler.run_once())
            for key in total:
                total[key] += report[key]
            # A full page may have more behind it; a page with nothing resolved would loop.
            if report["checked"] < PAGE_SIZE or report["resolved"] + report["abandoned"] == 0:
                break
        refunds = RefundReconciler(
            store=RefundStore(engine, store.writes),
            providers=providers,
            events=RefundEvents(messages, settings.results_topic),
            metrics=Metrics(),
            min_age=min_age,
            abandon_after=abandon_after,
        )
        total["refunds_examined"] = await refunds.run_once()
        return total
    finally:
        await providers.stop_all()
        await engine.dispose()


async def print_reconcile(settings: Settings) -> None:
    print(json.dumps(await reconcile_once(settings)))
