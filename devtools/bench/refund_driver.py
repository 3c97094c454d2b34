"""The follow-up measurements of one checkout (refunds, captures and cancels), run as a
file by ``devtools.bench.refunds``.

Mode ``refunds``: phase p, ``count`` CreatePayment commands (as bench case b: instant
provider, clear accounts) through :class:`ConsumerService`; phase r, one RefundPayment per
payment (500 of its 1,050 cents) through a fresh ConsumerService on the same SQLite file.

Mode ``captures``: phase p, ``2 * count`` authorize-only payments (``capture: false``);
phase c, a CapturePayment of 800 of the 1,050 cents of the first ``count`` of them (a
partial capture); phase x, a CancelPayment of each of the others. The provider authorizes,
captures and voids at once.

Per phase: the process CPU per command (all threads, from the provider's first call to the
last result on the results topic, as case b) and the SQL statements, commits and rollbacks
per command (a SQLAlchemy hook over the whole phase, start-up included).

Invariant: this file imports only modules that the baseline checkouts have too (nothing
else of ``devtools.bench.refund*``), because it runs with the measured checkout first on
``sys.path``: the same driver, the other tree's code. Its last line is ``RESULT_PREFIX``
and a JSON object that ``refund_report.parse_result`` reads.

Usage (the parent does this): ``python <this file> COUNT STALL_TIMEOUT_S [MODE]`` (MODE
``refunds``, the default, or ``captures``) with the checkout first on ``sys.path`` and
``KAFKA_BOOTSTRAP_SERVERS`` set. A checkout without captures (older than them) makes this
file exit ``NO_CAPTURES_EXIT`` with a line that says so, before anything runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from sqlalchemy import event
from sqlalchemy.engine import Engine

import domain
from devtools.bench import workload
from devtools.bench.environment import case_database, describe_load
from devtools.bench.pipeline import run_pipeline
from devtools.bench.provider import BenchProvider
from devtools.bench.workload import CaseTopics, created_topics, produce_encoded
from domain.money import Money
from domain.refunds import RefundPayment
from paygate.kafka_security import kafka_client_options
from paygate.settings import Settings
from providers.port import (
    ChargeOutcome,
    ChargeRequest,
    ChargeStatus,
    ProviderRefundStatus,
    RefundOutcome,
    RefundRequest,
)
from schemas.payments import PaymentMessages

RESULT_PREFIX: Final = "refund-bench-result: "
# The driver's exit status when the checkout has no captures to measure.
NO_CAPTURES_EXIT: Final = 3
NO_CAPTURES_PREFIX: Final = "no captures in this checkout: "
_REFUND_CENTS: Final = 500
_CAPTURE_AMOUNT: Final = Decimal("8.00")  # of the 10.50 EUR every bench payment is for
_REFUND_REQUESTED_AT: Final = datetime(2026, 1, 1, 12, 5, tzinfo=UTC)

Encoded = list[tuple[bytes, bytes]]
# (phase letter, title, its commands) for one run's count and order-id prefix.
Phases = list[tuple[str, str, Encoded]]

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
    """The bench's provider, whose refunds also succeed at once (and start its clock);
    a charge asked only to authorize is authorized, and captures and voids succeed at once.
    """

    def _called(self) -> None:
        if self.first_call_at is None:
            self.first_call_at = time.perf_counter()
            self.first_call_cpu = time.process_time()
        self.calls += 1

    def _returned(self) -> None:
        self.last_return_at = time.perf_counter()

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        if getattr(request, "capture", True):
            return await super().charge(request)
        self._called()
        outcome = self.outcomes.setdefault(
            request.attempt_key,
            ChargeOutcome(ChargeStatus.AUTHORIZED, f"bench-{len(self.outcomes) + 1}"),
        )
        self._returned()
        return outcome

    async def refund(self, request: RefundRequest) -> RefundOutcome:
        self._called()
        self._returned()
        return RefundOutcome(ProviderRefundStatus.SUCCEEDED, f"re-{request.refund_key}")

    # Annotated loosely: a checkout without captures has no CaptureRequest to name.
    async def capture(self, request: Any) -> ChargeOutcome:
        self._called()
        self._returned()
        return ChargeOutcome(ChargeStatus.SUCCEEDED, request.charge_reference)

    async def cancel(self, request: Any) -> ChargeOutcome:
        self._called()
        self._returned()
        return ChargeOutcome(ChargeStatus.CANCELED, request.charge_reference)


def _order_ids(prefix: str, start: int, stop: int) -> list[str]:
    return [f"{prefix}-{i:07d}" for i in range(start, stop)]


def _refund_commands(count: int, prefix: str) -> Encoded:
    """One refund per payment that ``produce_commands(count, prefix)`` created."""
    messages = PaymentMessages.bundled()
    encoded: Encoded = []
    for order_id in _order_ids(prefix, 0, count):
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


def _refund_phases(count: int, prefix: str) -> Phases:
    return [
        ("p", "payments", workload.encoded_commands(count, prefix)),
        ("r", "refunds", _refund_commands(count, prefix)),
    ]


def _capture_phases(count: int, prefix: str) -> Phases:
    """Authorize-only payments, then captures of the first half and cancels of the rest.

    Raises ImportError on a checkout without captures (imported here, not at the top, so
    that the refunds run on such a checkout all the same)."""
    from domain.cancels import CancelPayment
    from domain.captures import CapturePayment

    messages = PaymentMessages.bundled()
    payments: Encoded = []
    captures: Encoded = []
    cancels: Encoded = []
    for index, order_id in enumerate(_order_ids(prefix, 0, 2 * count)):
        command = dataclasses.replace(
            workload._command(order_id, workload.CLEAR_ACCOUNTS), capture=False
        )
        key = order_id.encode()
        payments.append((key, messages.encode_command(command)))
        pid, at = command.payment_request_id, _REFUND_REQUESTED_AT
        if index < count:
            capture = CapturePayment.create(
                payment_request_id=pid, order_id=order_id, requested_at=at, amount=_CAPTURE_AMOUNT
            )
            captures.append((key, messages.encode_capture(capture)))
        else:
            cancel = CancelPayment.create(
                payment_request_id=pid, order_id=order_id, requested_at=at
            )
            cancels.append((key, messages.encode_cancel(cancel)))
    return [("p", "payments", payments), ("c", "captures", captures), ("x", "cancels", cancels)]


MODES: Final[dict[str, Callable[[int, str], Phases]]] = {
    "refunds": _refund_phases,
    "captures": _capture_phases,
}


def _expected(mode: str, count: int) -> dict[str, dict[str, int]] | None:
    """The final states a run of ``mode`` must end in, or None for the refunds' own rule
    (refund_report.expected_states)."""
    if mode != "captures":
        return None
    from domain.status import PaymentStatus

    succeeded, canceled = PaymentStatus.SUCCEEDED.value, PaymentStatus.CANCELED.value
    return {"payments": {succeeded: count, canceled: count}, "refunds": {}}


def _states(db_file: str, table: str) -> dict[str, int]:
    with sqlite3.connect(db_file) as con:
        rows = con.execute(f"select status, count(*) from {table} group by status").fetchall()  # noqa: S608 (a fixed table name)
    return {str(status): int(n) for status, n in rows}


async def measure(
    phases_of: Phases, count: int, mode: str, stall_timeout_s: float
) -> dict[str, Any]:
    """Every phase on one fresh SQLite file; the figures, as ``RESULT_PREFIX``'s JSON."""
    base = Settings().model_copy(update={"accept_clear_account_numbers": True})
    run_id = uuid.uuid4().hex[:8]
    phases: dict[str, dict[str, float]] = {}
    with case_database(None, mode) as db_url:
        for phase, title, commands in phases_of:
            topics = CaseTopics.fresh(run_id, phase)
            settings = topics.settings(base, 3).model_copy(update={"database_url": db_url})
            kafka = kafka_client_options(settings)
            n = len(commands)
            async with created_topics(settings):
                await produce_encoded(kafka, topics.commands, commands)
                before = dict(_COUNTS)
                result = await run_pipeline(
                    settings,
                    case=phase,
                    title=title,
                    payments=n,
                    provider=RefundingProvider(),
                    stall_timeout_s=stall_timeout_s,
                )
            figures = {
                name: (_COUNTS[name] - before[name]) / n
                for name in ("statements", "commits", "rollbacks")
            }
            figures["cpu_us"] = (result.cpu_s or 0.0) / n * 1e6
            figures["elapsed_s"] = result.elapsed_s
            figures["commands"] = n
            phases[title] = figures
            print(
                f"phase {title}: {n} in {result.elapsed_s:.3f} s "
                f"({n / result.elapsed_s:.0f}/s), "
                f"CPU {figures['cpu_us']:.0f} us per command, "
                f"{figures['statements']:.2f} statements per command",
                flush=True,
            )
        db_file = db_url.split("///", 1)[1]
        states = {table: _states(db_file, table) for table in ("payments", "refunds")}
    result_data: dict[str, Any] = {
        "code": _CODE_ROOT,
        "count": count,
        "order": [title for _, title, _ in phases_of],
        "phases": phases,
        "states": states,
    }
    expected = _expected(mode, count)
    if expected is not None:
        result_data["expected"] = expected
    return result_data


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING)
    count, stall_timeout_s = int(argv[0]), float(argv[1])
    mode = argv[2] if len(argv) > 2 else "refunds"
    print(f"code: {_CODE_ROOT}", flush=True)
    try:
        phases_of = MODES[mode](count, f"bench-{uuid.uuid4().hex[:8]}")
    except ImportError as exc:
        print(f"{NO_CAPTURES_PREFIX}{exc}", flush=True)
        return NO_CAPTURES_EXIT
    print(f"load average at start: {describe_load()}", flush=True)
    result = asyncio.run(measure(phases_of, count, mode, stall_timeout_s))
    print(f"load average at end: {describe_load()}", flush=True)
    print(RESULT_PREFIX + json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
