"""``paygate reconcile``: one reconciliation pass on demand -- payments (with the stray-charge
sweep), refunds, captures, cancels, expired authorizations -- as JSON.

Outcomes it records go to the outbox; a running consumer's relay publishes them.
"""

from __future__ import annotations

import json
from dataclasses import asdict

from consumer.payment_reconciler import PAGE_SIZE
from paygate.database import open_database
from paygate.handlers import handlers_of
from paygate.providers import build_providers, build_router
from paygate.settings import Settings
from paygate.vault_wiring import open_vault
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics


async def reconcile_once(settings: Settings) -> dict[str, int]:
    providers = build_providers(settings)
    db = await open_database(settings)
    opened = await open_vault(settings, db.engine, db.writes)
    try:
        await providers.start_all()
        metrics = Metrics()
        handlers = handlers_of(
            settings,
            db=db,
            providers=providers,
            router=build_router(settings, providers),
            messages=PaymentMessages.bundled(),
            metrics=metrics,
            vault=opened.vault,
        )
        total: dict[str, int] = {}
        while True:
            report = asdict(await handlers.payment_reconciler.run_once())
            strays = report.pop("strays") or {}
            for key, count in [*report.items(), *((f"strays_{k}", v) for k, v in strays.items())]:
                total[key] = total.get(key, 0) + count
            # A full page may have more behind it; a page with nothing resolved would loop.
            if report["checked"] < PAGE_SIZE or report["resolved"] == 0:
                break
        total["refunds_examined"] = await handlers.refund_reconciler.run_once()
        total["captures_examined"] = await handlers.capture_reconciler.run_once()
        total["cancels_examined"] = await handlers.cancel_reconciler.run_once()
        total["authorizations_released"] = await handlers.authorization_expiry.run_once()
        return total
    finally:
        await providers.stop_all()
        await opened.close()
        await db.close()


async def print_reconcile(settings: Settings) -> None:
    print(json.dumps(await reconcile_once(settings)))
