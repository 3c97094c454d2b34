"""Every class of payment failure, end to end: real broker, real processes, real acquirer.

A ``paygate consumer`` process reads Avro commands from the session's Kafka broker and
charges the sandbox acquirer, itself a process (``python -m providers.sandbox``, which takes
``--hang-s``). The payer's test account number picks the failure. Each test checks three
witnesses that do not share code with the consumer: the result events on the results topic
(a plain Kafka reader), the stored payment (the store, read directly) and the acquirer's
ledger (``GET /admin/charges``). The ledger records charges, not calls, so a recording tap
between the consumer and the acquirer counts the calls (retries, status queries).

Windows are short so the file runs fast: a provider timeout well below the acquirer's hang,
back-offs of tens of milliseconds, a reconciliation pass every half second.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from domain.errors import ErrorCode
from domain.events import PaymentResult
from domain.payment_view import PaymentView
from domain.payments import CreatePayment
from domain.status import PaymentStatus
from paygate.settings import Settings
from paygate.topics import ensure_topics
from persistence.engine import create_engine
from persistence.payment_store import PaymentStore
from schemas.payments import PaymentMessages
from tests.conftest import _fresh_postgres_database
from tests.support.acquirer_tap import AcquirerTap
from tests.support.builders import (
    DECLINED_CARD,
    PAYEE_IBAN,
    TIMEOUT_CARD,
    TIMEOUT_THEN_DECLINE_CARD,
    UNAVAILABLE_CARD,
    UNAVAILABLE_ONCE_CARD,
    create_payment,
)
from tests.support.kafka_io import produce, read_until
from tests.support.processes import ServiceProcess, environment_of, start_service
from tests.support.stack import isolated_settings

pytestmark = pytest.mark.e2e

# Sandbox test accounts (providers/sandbox/accounts.py, docs/sandbox.md).
CARDS = (
    DECLINED_CARD,
    UNAVAILABLE_ONCE_CARD,
    UNAVAILABLE_CARD,
    TIMEOUT_CARD,
    TIMEOUT_THEN_DECLINE_CARD,
)

MAX_ATTEMPTS = 3  # unset by default (the 90 s budget decides): the count is the setting's doing
PROVIDER_TIMEOUT_S = 1.5
HANG_S = 30.0  # far beyond the provider timeout: paygate always gives up first
RESULT_TIMEOUT_S = 60.0  # a bound so that a lost result fails instead of hanging

MESSAGES = PaymentMessages.bundled()


@dataclass
class Stack:
    settings: Settings
    acquirer_url: str  # the acquirer itself, for its ledger
    tap: AcquirerTap  # what the consumer talks to

    @property
    def bootstrap(self) -> str:
        return self.settings.require_kafka()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(
    request: pytest.FixtureRequest, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp(f"failures-{request.param}")
    if request.param == "sqlite":
        yield from _stack_on(f"sqlite+aiosqlite:///{work / 'paygate.db'}", kafka_bootstrap, work)
        return
    # A database of its own: the consumer's reconciler (every 0.5 s) takes every in-doubt
    # payment of its database, and the witnesses count this stack's calls and charges.
    with _fresh_postgres_database(request.getfixturevalue("postgres_admin_url")) as url:
        yield from _stack_on(url, kafka_bootstrap, work)


def _stack_on(database_url: str, kafka_bootstrap: str, work: Path) -> Iterator[Stack]:
    settings = isolated_settings(
        kafka_bootstrap,
        work,
        database_url,
        "payments",
        provider="sandbox",
        provider_timeout_s=PROVIDER_TIMEOUT_S,
        provider_max_attempts=MAX_ATTEMPTS,
        retry_base_delay_s=0.05,
        retry_max_delay_s=0.2,
        reconcile_interval_s=0.5,
        reconcile_min_age_s=PROVIDER_TIMEOUT_S + 0.5,
        abandon_after_s=120.0,
    )
    asyncio.run(ensure_topics(settings))
    env = environment_of(settings)
    processes: list[ServiceProcess] = []
    try:
        acquirer = start_service(
            "acquirer",
            ["--port", "0", "--ledger", str(work / "ledger.db"), "--hang-s", str(HANG_S)],
            env=env,
            log_dir=work,
            announce_prefix="SANDBOX_URL=",
            module="providers.sandbox",
        )
        processes.append(acquirer)
        with AcquirerTap(acquirer.announced) as tap:
            env["PAYGATE_SANDBOX_URL"] = tap.url
            processes.append(start_service("consumer", ["consumer"], env=env, log_dir=work))
            try:
                yield Stack(settings, acquirer.announced, tap)
            finally:
                for process in reversed(processes):
                    process.stop()
    finally:
        for process in reversed(processes):
            process.stop()
    for process in processes:
        assert process.process.returncode == 0, (
            f"{process.name} exited badly:\n{process.log()[-3000:]}"
        )
        for number in (*CARDS, PAYEE_IBAN):
            assert number not in process.log(), f"{process.name} logged a clear account number"


# --- the three witnesses -------------------------------------------------------------


async def submit(stack: Stack, card: str) -> CreatePayment:
    """Produce one CreatePayment as an upstream service would: Avro, keyed by order id."""
    command = create_payment(payer_number=card)
    value = MESSAGES.encode_command(command)
    await produce(
        stack.bootstrap, stack.settings.commands_topic, [(command.order_id.encode(), value)]
    )
    return command


async def result_events(stack: Stack, payment_id: str) -> list[PaymentResult]:
    """The payment's result events up to its final one, in topic order, duplicates dropped.

    Duplicates (same ``eventId``) are legitimate (at-least-once relay); readers drop them.
    """

    def events(records: list[Any]) -> list[PaymentResult]:
        seen: set[str] = set()
        mine = []
        for record in records:
            event = MESSAGES.decode_result(record.value)
            if event.payment_request_id == payment_id and event.event_id not in seen:
                seen.add(event.event_id)
                mine.append(event)
        return mine

    def final(records: list[Any]) -> bool:
        return any(e.status.is_final for e in events(records))

    records = await read_until(
        stack.bootstrap, stack.settings.results_topic, final, timeout_s=RESULT_TIMEOUT_S
    )
    return events(records)


async def stored_payment(stack: Stack, payment_id: str) -> PaymentView:
    engine = create_engine(stack.settings.database_url)
    try:
        payment = await PaymentStore(engine).get_payment(payment_id)
    finally:
        await engine.dispose()
    assert payment is not None, f"{payment_id} is not in the store"
    return payment


async def ledger_rows(stack: Stack, payment_id: str) -> list[dict[str, Any]]:
    """The acquirer's ledger rows for the payment (asked of the acquirer, not the tap)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{stack.acquirer_url}/admin/charges") as response,
    ):
        assert response.status == 200
        charges = (await response.json())["charges"]
    return [row for row in charges if row["paymentReference"] == payment_id]


def statuses(events: list[PaymentResult]) -> list[PaymentStatus]:
    return [event.status for event in events]


# --- the failure classes -------------------------------------------------------------


async def test_a_decline_fails_the_payment_at_once_and_is_never_retried(stack: Stack) -> None:
    command = await submit(stack, DECLINED_CARD)
    payment_id = command.payment_request_id

    events = await result_events(stack, payment_id)
    assert statuses(events) == [PaymentStatus.FAILED]
    [event] = events
    assert event.payment_result is False
    assert event.order_id == command.order_id
    assert event.error is not None
    assert event.error.code is ErrorCode.PAYMENT_DECLINED
    assert event.error.decline_code == "generic_decline"
    assert event.error.retryable is False

    payment = await stored_payment(stack, payment_id)
    assert payment.status is PaymentStatus.FAILED
    assert payment.error is not None
    assert (payment.error.code, payment.error.decline_code) == (
        ErrorCode.PAYMENT_DECLINED,
        "generic_decline",
    )

    [row] = await ledger_rows(stack, payment_id)
    assert (row["status"], row["declineCode"]) == ("declined", "generic_decline")
    assert [call.status for call in stack.tap.charges(payment_id)] == [200]


async def test_an_acquirer_unavailable_until_retries_run_out_fails_as_provider_unavailable(
    stack: Stack,
) -> None:
    command = await submit(stack, UNAVAILABLE_CARD)
    payment_id = command.payment_request_id

    events = await result_events(stack, payment_id)
    assert statuses(events) == [PaymentStatus.FAILED]
    [event] = events
    assert event.payment_result is False
    assert event.error is not None
    assert event.error.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert event.error.decline_code is None

    payment = await stored_payment(stack, payment_id)
    assert payment.status is PaymentStatus.FAILED
    assert payment.error is not None
    assert payment.error.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert payment.next_retry_at is None  # no retry left scheduled
    assert payment.provider_reference is None

    # Called exactly the configured number of times, always with the one attempt key (a
    # retry at one provider never opens a new key: see docs/reliability.md), each refused
    # before processing: nothing in the ledger, so nothing charged.
    charges = stack.tap.charges(payment_id)
    assert [call.status for call in charges] == [503] * MAX_ATTEMPTS
    assert {call.attempt_key for call in charges} == {f"{payment_id}-a1"}
    assert await ledger_rows(stack, payment_id) == []


@pytest.mark.parametrize(
    ("card", "final", "code"),
    [
        (TIMEOUT_CARD, PaymentStatus.SUCCEEDED, None),
        (TIMEOUT_THEN_DECLINE_CARD, PaymentStatus.FAILED, ErrorCode.PAYMENT_DECLINED),
    ],
    ids=["to-success", "to-failure"],
)
async def test_a_timeout_is_pending_until_the_reconciler_asks_the_acquirer(
    stack: Stack, card: str, final: PaymentStatus, code: ErrorCode | None
) -> None:
    command = await submit(stack, card)
    payment_id = command.payment_request_id

    events = await result_events(stack, payment_id)
    # First the unknown outcome is announced as pending (never as failed), then the
    # reconciler's answer from the acquirer.
    assert statuses(events) == [PaymentStatus.PENDING, final]
    pending, resolved = events
    assert pending.payment_result is False
    assert resolved.payment_result is (final is PaymentStatus.SUCCEEDED)
    assert (resolved.error.code if resolved.error else None) is code

    [row] = await ledger_rows(stack, payment_id)
    payment = await stored_payment(stack, payment_id)
    assert payment.status is final
    if final is PaymentStatus.SUCCEEDED:
        assert row["status"] == "succeeded"
        assert payment.error is None
        assert payment.provider_reference == resolved.provider_reference == row["id"]
    else:
        assert (row["status"], row["declineCode"]) == ("declined", "generic_decline")
        assert resolved.error is not None
        assert resolved.error.decline_code == "generic_decline"
        assert payment.error is not None
        assert (payment.error.code, payment.error.decline_code) == (code, "generic_decline")

    # One charge call, which paygate gave up on; the outcome came from asking, not from
    # charging again.
    [charge] = stack.tap.charges(payment_id)
    assert charge.status is None  # the acquirer is still hanging on it
    queries = stack.tap.status_queries(payment_id)
    assert queries, "the reconciler never asked the acquirer"
    assert {query.attempt_key for query in queries} == {charge.attempt_key}
    assert queries[-1].status == 200


async def test_an_acquirer_unavailable_once_is_retried_and_charged_once(stack: Stack) -> None:
    command = await submit(stack, UNAVAILABLE_ONCE_CARD)
    payment_id = command.payment_request_id

    events = await result_events(stack, payment_id)
    assert statuses(events) == [PaymentStatus.SUCCEEDED]
    [event] = events
    assert event.payment_result is True
    assert event.error is None

    [row] = await ledger_rows(stack, payment_id)
    assert row["status"] == "succeeded"
    payment = await stored_payment(stack, payment_id)
    assert payment.status is PaymentStatus.SUCCEEDED
    assert payment.error is None
    assert payment.provider_reference == event.provider_reference == row["id"]

    # Refused once before processing, then retried with the same key, which charged.
    charges = stack.tap.charges(payment_id)
    assert [call.status for call in charges] == [503, 200]
    assert {call.attempt_key for call in charges} == {f"{payment_id}-a1"}
    assert row["idempotencyKey"] == charges[-1].attempt_key
