"""``paygate reconcile settle ID [--failed --reason TEXT]``: settle by hand a payment or
refund paygate withholds (docs/runbook.md#paygateresendwithheld).

    paygate reconcile settle PAYMENT_OR_REFUND_ID
        asks the provider once more by the key; records its answer if it now has one
    paygate reconcile settle PAYMENT_OR_REFUND_ID --failed --reason "dashboard shows nothing"
        the same, and if the provider still holds nothing: fails it (settled_by_operator)

The id is looked up as a payment, then as a refund. Rules and outcomes:
consumer.payment_settlement and consumer.refund_settlement. Prints one JSON object (what was
done) and exits 0; a refusal prints ``{"error": {code, message, ...}}`` on stderr and exits
2, having changed nothing. What it records goes to the outbox, as a reconciler pass's does;
a running consumer's relay publishes it.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import socket
import sys

from consumer.payment_events import PaymentEvents
from consumer.payment_settlement import PaymentSettlement
from consumer.refund_events import RefundEvents
from consumer.refund_settlement import RefundSettlement
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode, PaygateError
from domain.operator_settlement import Settled
from paygate.database import open_database
from paygate.providers import build_providers
from paygate.settings import Settings
from paygate.settle_args import fail_reason_of
from schemas.payments import PaymentMessages

EXIT_OK = 0
EXIT_REFUSED = 2

log = logging.getLogger("paygate.operator")


def run_by() -> str:
    """Who ran the command, for the audit line: the operating-system user and the host (a
    settlement changes money records by hand; the log must say whose hand)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for the uid (a bare container)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


async def settle(settings: Settings, subject_id: str, fail_reason: str | None) -> Settled:
    providers = build_providers(settings)
    db = await open_database(settings)
    try:
        await providers.start_all()
        messages = PaymentMessages.bundled()
        payments = PaymentSettlement(
            store=db.payments,
            providers=providers,
            events=PaymentEvents(messages, settings.results_topic),
            strays=db.strays,
            resend_limit=settings.resend_limit,
        )
        try:
            return await payments.settle(subject_id, fail_reason=fail_reason)
        except PaygateError as exc:
            if exc.code is not ErrorCode.NOT_FOUND:
                raise
        refunds = RefundSettlement(
            store=db.refunds,
            payments=db.payments,
            providers=providers,
            events=RefundEvents(messages, settings.results_topic),
        )
        try:
            return await refunds.settle(subject_id, fail_reason=fail_reason)
        except PaygateError as exc:
            if exc.code is not ErrorCode.NOT_FOUND:
                raise
            raise PaygateError(
                ErrorCode.NOT_FOUND, f"no payment or refund {subject_id}", param="id"
            ) from None
    finally:
        await providers.stop_all()
        await db.close()


def run_settle(settings: Settings, args: argparse.Namespace) -> int:
    audit = {"settle_id": args.id, "run_by": run_by(), "fail_requested": bool(args.failed)}
    try:
        settled = asyncio.run(settle(settings, args.id, fail_reason_of(args)))
    except PaygateError as exc:
        log.warning("operator settlement refused: %s", exc.code.value, extra=audit)
        print(json.dumps({"error": ErrorInfo.from_error(exc).to_dict()}), file=sys.stderr)
        return EXIT_REFUSED
    log.warning(
        "operator settlement: %s",
        settled.action,
        extra={**audit, "action": settled.action, "outcome": settled.outcome},
    )
    print(json.dumps(settled.to_dict()))
    return EXIT_OK
