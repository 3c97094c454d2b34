"""The refunds measurement of one checkout, run as a file by ``devtools.bench.refunds``.

Phase p: ``count`` CreatePayment commands (as bench case b: instant provider, clear
accounts) through :class:`ConsumerService`. Phase r: one RefundPayment per payment (500 of
its 1,050 cents) through a fresh ConsumerService on the same SQLite file. Per phase: the
process CPU per command (all threads, from the provider's first call to the last result on
the results topic, as case b) and the SQL statements, commits and rollbacks per command
(a SQLAlchemy hook over the whole phase, start-up included).

Invariant: this file imports only modules that the baseline checkouts have too (nothing
else of ``devtools.bench.refund*``), because it runs with the measured checkout first on
``sys.path``: the same driver, the other tree's code. Its last line is ``RESULT_PREFIX``
and a JSON object that ``refund_report.parse_result`` reads.

Usage (the parent does this): ``python <this file> COUNT STALL_TIMEOUT_S`` with the
checkout first on ``sys.path`` and ``KAFKA_BOOTSTRAP_SERVERS`` set.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from sqlalchemy import event
from sqlalchemy.engine import Engine

import domain
from devtools.bench import workload
from devtools.bench.environment import case_database, describe_load
from devtools.bench.pipeline import run_pipeline
from devtools.bench.provider import BenchProvider
from devtools.bench.workload import CaseTopics, created_topics, produce_commands, produce_encoded
from domain.money import Money
from domain.refunds import RefundPayment
from paygate.kafka_security import kafka_client_options
from paygate.settings import Settings
from providers.port import ProviderRefundStatus, RefundOutcome, RefundRequest
from schemas.payments import PaymentMessages

RESULT_PREFIX: Final = "refund-bench-result: "
PHASES: Final = (("p", "payments"), ("r", "refunds"))
_REFUND_CENTS: Final = 500
_REFUND_REQUESTED_AT: Final = datetime(2026, 1, 1, 12, 5, tzinfo=UTC)

# Counted for every engine of this process: the bench's only engines are the service's.
_COUNTS: dict[str, int] = {"statements": 0, "commits": 0, "rollbacks": 0}
# The checkout whose code this process runs: the parent checks it is the one it meant.
_CODE_ROOT: Final = str(Path(domain.__file__).resolve().parents[1])


@event.listens_for(Engine, "before_cursor_execute")
def _count_statement(*_args: Any) -> None:
    _COUNTS["statements"] += 1


@event.listens_for(Engine, "commit")
def _count_commit(*_args: Any) -> None:
    _COUNTS["commits"] += 1


@event.listens_for(Engine, "rollback")
def _count_rollback(*_args: Any) -> None:
    _COUNTS["rollbacks"] += 1


class RefundingProvider(BenchProvider):
    """The bench's provider, whose refunds also succeed at once (and start its clock)."""

    async def refund(self, request: RefundRequest) -> RefundOutcome:
        if self.first_call_at is None:
            self.first_call_at = time.perf_counter()
            self.first_call_cpu = time.process_time()
        self.calls += 1
        self.last_return_at = time.perf_counter()
        return RefundOutcome(ProviderRefundStatus.SUCCEEDED, f"re-{request.refund_key}")


def _refund_commands(count: int, prefix: str) -> list[tuple[bytes, bytes]]:
    """One refund per payment that ``produce_commands(count, prefix)`` created."""
    messages = PaymentMessages.bundled()
    encoded: list[tuple[bytes, bytes]] = []
    for i in range(count):
        order_id = f"{prefix}-{i:07d}"
        payment = workload._command(order_id, workload.CLEAR_ACCOUNTS)
        refund = RefundPayment.create(
            idempotency_key=f"refund-{order_id}",
            payment_request_id=payment.payment_request_id,
            order_id=order_id,
            amount=Money(_REFUND_CENTS, "EUR"),
            reason="requested_by_customer",
            requested_at=_REFUND_REQUESTED_AT,
        )
        encoded.append((order_id.encode(), messages.encode_refund(refund)))
    return encoded


def _states(db_file: str, table: str) -> dict[str, int]:
    with sqlite3.connect(db_file) as con:
        rows = con.execute(f"select status, count(*) from {table} group by status").fetchall()  # noqa: S608 (a fixed table name)
    return {str(status): int(n) for status, n in rows}


async def measure(count: int, stall_timeout_s: float) -> dict[str, Any]:
    """Both phases on one fresh SQLite file; the figures, as ``RESULT_PREFIX``'s JSON."""
    base = Settings().model_copy(update={"accept_clear_account_numbers": True})
    run_id = uuid.uuid4().hex[:8]
    prefix = f"bench-{run_id}"
    phases: dict[str, dict[str, float]] = {}
    with case_database(None, "refunds") as db_url:
        for phase, title in PHASES:
            topics = CaseTopics.fresh(run_id, phase)
            settings = topics.settings(base, 3).model_copy(update={"database_url": db_url})
            kafka = kafka_client_options(settings)
            async with created_topics(settings):
                if phase == "p":
                    await produce_commands(kafka, topics.commands, count, prefix)
                else:
                    await produce_encoded(kafka, topics.commands, _refund_commands(count, prefix))
                before = dict(_COUNTS)
                result = await run_pipeline(
                    settings,
                    case=phase,
                    title=title,
                    payments=count,
                    provider=RefundingProvider(),
                    stall_timeout_s=stall_timeout_s,
                )
            figures = {
                name: (_COUNTS[name] - before[name]) / count
                for name in ("statements", "commits", "rollbacks")
            }
            figures["cpu_us"] = (result.cpu_s or 0.0) / count * 1e6
            figures["elapsed_s"] = result.elapsed_s
            phases[title] = figures
            print(
                f"phase {title}: {count} in {result.elapsed_s:.3f} s, "
                f"CPU {figures['cpu_us']:.0f} us per command, "
                f"{figures['statements']:.2f} statements per command",
                flush=True,
            )
        db_file = db_url.split("///", 1)[1]
        states = {table: _states(db_file, table) for table in ("payments", "refunds")}
    return {
        "code": _CODE_ROOT,
        "count": count,
        "phases": phases,
        "states": states,
    }


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING)
    count, stall_timeout_s = int(argv[0]), float(argv[1])
    print(f"code: {_CODE_ROOT}", flush=True)
    print(f"load average at start: {describe_load()}", flush=True)
    result = asyncio.run(measure(count, stall_timeout_s))
    print(f"load average at end: {describe_load()}", flush=True)
    print(RESULT_PREFIX + json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
