"""Bounded tries: which failures dead-letter a command, after how many tries, and which never do.

The handler, decoder and dead-letter topic are fakes, and back-off waits are recorded instead
of slept; the same loop against a real broker and both databases is in
tests/integration/test_bounded_retries.py.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, cast

import asyncpg  # type: ignore[import-untyped]
import pytest
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaConnectionError
from asyncpg.exceptions import _base as asyncpg_base  # type: ignore[import-untyped]
from prometheus_client import CollectorRegistry
from sqlalchemy import exc as sa

from consumer.dead_letters import HEADER_MESSAGE, HEADER_REASON, DeadLetterRouter, reason_kind
from consumer.failures import FailureKind, classify
from consumer.record_handling import RecordHandling
from domain.errors import ErrorCode, PaygateError
from domain.status import InvalidTransitionError, PaymentStatus
from providers.errors import ProviderTimeoutError, ProviderUnavailableError
from schemas.codec import CodecError
from telemetry.metrics import Metrics
from tests.support.metric_samples import dead_lettered

pytestmark = pytest.mark.unit

ATTEMPTS = 5
MAX_BACKOFF_S = 0.4
COMMAND = object()  # the handler fakes never look inside


def _record(value: bytes = b"command", headers: Sequence[tuple[str, bytes]] = ()) -> ConsumerRecord:
    return ConsumerRecord(
        "payments.commands", 2, 17, 0, 0, b"order-1", value, None, 7, len(value), headers
    )


class Decoder:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    def decode_any_command(self, data: bytes) -> Any:
        if self.error is not None:
            raise self.error
        return COMMAND


class FailingHandler:
    """Raises what ``failures`` makes for its first ``len(failures)`` calls, then succeeds."""

    def __init__(self, failures: Sequence[Callable[[], Exception]]) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def handle(self, command: object) -> object:
        assert command is COMMAND
        self.calls += 1
        if self.calls <= len(self.failures):
            raise self.failures[self.calls - 1]()
        return "done"


class DeadLetters:
    def __init__(self, unreachable_times: int = 0) -> None:
        self.routed: list[dict[str, Any]] = []
        self.unreachable_times = unreachable_times

    async def route(self, **letter: Any) -> None:
        if self.unreachable_times:
            self.unreachable_times -= 1
            raise KafkaConnectionError("broker down")
        self.routed.append(letter)


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def _handling(
    handler: FailingHandler, dead: DeadLetters, sleeps: Sleeps, decoder: Decoder | None = None
) -> RecordHandling:
    return RecordHandling(
        messages=decoder or Decoder(),
        handler=handler,
        dead_letters=dead,
        max_attempts=ATTEMPTS,
        max_backoff_s=MAX_BACKOFF_S,
        sleep=sleeps,
    )


def _unexpected() -> Exception:
    return RuntimeError("a bug, or something nobody foresaw")


def _database_down() -> Exception:
    return sa.OperationalError("SELECT 1", {}, sqlite3.OperationalError("database is locked"))


def _nul_refused() -> Exception:
    return _wrapped(sa.DBAPIError, asyncpg.exceptions.CharacterNotInRepertoireError("0x00"))


class _Adapted(Exception):
    """SQLAlchemy's asyncpg adapter error: the SQLSTATE copied, the driver's error its cause."""

    def __init__(self, driver_error: BaseException) -> None:
        super().__init__(str(driver_error))
        self.sqlstate = getattr(driver_error, "sqlstate", None)
        self.__cause__ = driver_error


def _wrapped(kind: type[sa.DBAPIError], driver_error: BaseException) -> sa.DBAPIError:
    """As SQLAlchemy raises an asyncpg error: wrapped by the adapter, then by SQLAlchemy."""
    adapted = _Adapted(driver_error)
    error = kind("INSERT INTO payments ...", {}, adapted)
    error.__cause__ = adapted
    return error


async def test_an_unexpected_failure_every_time_is_dead_lettered_after_the_last_try() -> None:
    handler, dead, sleeps = FailingHandler([_unexpected] * 100), DeadLetters(), Sleeps()
    record = _record(headers=[("paygate.republished.from", b"dlq:0:3")])

    await _handling(handler, dead, sleeps).handle(record)

    assert handler.calls == ATTEMPTS
    assert sleeps.waits == [0.1, 0.2, 0.4, 0.4]  # between tries, capped
    [letter] = dead.routed
    assert (letter["error"].code, letter["reason"]) == (
        ErrorCode.INTERNAL_ERROR,
        "retries_exhausted",
    )
    assert letter["error"].message == (
        f"handling failed {ATTEMPTS} times; the last time with RuntimeError"
    )
    assert "nobody foresaw" not in letter["error"].message  # exception text stays in the log
    assert (letter["value"], letter["key"], letter["partition"], letter["offset"]) == (
        b"command",
        b"order-1",
        2,
        17,
    )
    assert list(letter["incoming_headers"]) == [("paygate.republished.from", b"dlq:0:3")]


async def test_a_failure_on_every_try_but_the_last_is_not_dead_lettered() -> None:
    handler, dead, sleeps = FailingHandler([_unexpected] * (ATTEMPTS - 1)), DeadLetters(), Sleeps()

    await _handling(handler, dead, sleeps).handle(_record())

    assert handler.calls == ATTEMPTS
    assert dead.routed == []


async def test_a_value_the_database_refuses_is_dead_lettered_at_the_first_failure() -> None:
    handler, dead, sleeps = FailingHandler([_nul_refused] * 100), DeadLetters(), Sleeps()

    await _handling(handler, dead, sleeps).handle(_record())

    assert (handler.calls, sleeps.waits) == (1, [])
    [letter] = dead.routed
    assert (letter["error"].code, letter["reason"]) == (
        ErrorCode.INVALID_REQUEST,
        "database_refused",
    )
    assert "SQLSTATE 22021" in letter["error"].message


async def test_a_broken_rule_is_dead_lettered_at_once_with_its_own_code() -> None:
    def not_found() -> Exception:
        return PaygateError(ErrorCode.NOT_FOUND, "no payment with this paymentRequestId")

    handler, dead, sleeps = FailingHandler([not_found]), DeadLetters(), Sleeps()

    await _handling(handler, dead, sleeps).handle(_record())

    [letter] = dead.routed
    assert (letter["error"].code, letter["reason"]) == (ErrorCode.NOT_FOUND, "rule_violation")
    assert letter["error"].message == "no payment with this paymentRequestId"
    assert handler.calls == 1


async def test_a_database_that_stays_down_never_dead_letters_a_good_command() -> None:
    # Far more transient failures than the bound, unexpected ones among them: only those
    # count, and there are fewer of them than the bound.
    failures = [_database_down] * (4 * ATTEMPTS) + [_unexpected] * (ATTEMPTS - 1)
    handler, dead, sleeps = FailingHandler(failures), DeadLetters(), Sleeps()

    await _handling(handler, dead, sleeps).handle(_record())

    assert handler.calls == len(failures) + 1
    assert dead.routed == []
    assert max(sleeps.waits) == MAX_BACKOFF_S


async def test_a_message_that_does_not_decode_is_dead_lettered_without_being_handled() -> None:
    handler, dead, sleeps = FailingHandler([]), DeadLetters(), Sleeps()
    refusal = PaygateError(ErrorCode.INVALID_TEXT, "orderId must not ...", param="orderId")

    await _handling(handler, dead, sleeps, Decoder(refusal)).handle(_record())

    assert handler.calls == 0
    [letter] = dead.routed
    assert (letter["error"].code, letter["reason"]) == (
        ErrorCode.INVALID_TEXT,
        "invalid_value:orderId",
    )


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (
            CodecError(ErrorCode.MALFORMED_MESSAGE, "too short", reason="truncated_header"),
            ErrorCode.MALFORMED_MESSAGE,
            "truncated_header",
        ),
        # Decoding is pure: whatever it raises, it raises again, so it is never retried.
        (ArithmeticError("decimal overflow"), ErrorCode.INVALID_REQUEST, "invalid_value"),
        (RecursionError(), ErrorCode.INVALID_REQUEST, "invalid_value"),
    ],
)
async def test_any_decoding_failure_is_dead_lettered_at_once(
    error: Exception, code: ErrorCode, reason: str
) -> None:
    handler, dead, sleeps = FailingHandler([]), DeadLetters(), Sleeps()

    await _handling(handler, dead, sleeps, Decoder(error)).handle(_record())

    [letter] = dead.routed
    assert (letter["error"].code, letter["reason"]) == (code, reason)
    assert (handler.calls, sleeps.waits) == (0, [])


async def test_a_dead_letter_is_written_once_the_broker_is_back() -> None:
    handler, dead, sleeps = (
        FailingHandler([_nul_refused]),
        DeadLetters(unreachable_times=3),
        Sleeps(),
    )

    await _handling(handler, dead, sleeps).handle(_record())

    assert len(dead.routed) == 1
    assert sleeps.waits == [0.1, 0.2, 0.4]
    assert handler.calls == 1  # the verdict stands: the command is not handled again


async def test_cancellation_while_waiting_leaves_the_message_undone() -> None:
    class CancelledSleep(Sleeps):
        async def __call__(self, seconds: float) -> None:
            raise asyncio.CancelledError

    handler, dead = FailingHandler([_unexpected] * 100), DeadLetters()

    with pytest.raises(asyncio.CancelledError):
        await _handling(handler, dead, CancelledSleep()).handle(_record())

    assert (handler.calls, dead.routed) == (1, [])


def test_at_least_one_try() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RecordHandling(
            messages=Decoder(),
            handler=FailingHandler([]),
            dead_letters=DeadLetters(),
            max_attempts=0,
            max_backoff_s=1.0,
        )


# --- the verdicts -------------------------------------------------------------------------


def _raised_from(error: BaseException, cause: BaseException) -> BaseException:
    error.__cause__ = cause
    return error


def _raised_while_handling(error: BaseException, context: BaseException) -> BaseException:
    error.__context__ = context
    return error


@pytest.mark.parametrize(
    ("error", "kind", "reason"),
    [
        # The message's own fault: dead-lettered at once.
        (_nul_refused(), FailureKind.PERMANENT, "database_refused"),
        (sa.DataError("INSERT", {}, sqlite3.DataError("too big")), FailureKind.PERMANENT, None),
        (
            _wrapped(sa.InterfaceError, asyncpg_base.DataError("invalid input for $1")),
            FailureKind.PERMANENT,
            "database_refused",
        ),
        (
            _wrapped(sa.DBAPIError, asyncpg.exceptions.StringDataRightTruncationError("too long")),
            FailureKind.PERMANENT,
            "database_refused",
        ),
        (
            _raised_from(RuntimeError("store failed"), _nul_refused()),
            FailureKind.PERMANENT,
            "database_refused",
        ),
        (
            PaygateError(ErrorCode.PAYMENT_NOT_CAPTURABLE, "not authorized"),
            FailureKind.PERMANENT,
            "rule_violation",
        ),
        # Not the message's fault: retried for as long as it lasts.
        (_database_down(), FailureKind.TRANSIENT, None),
        (
            _wrapped(sa.InterfaceError, asyncpg.exceptions.ConnectionDoesNotExistError("closed")),
            FailureKind.TRANSIENT,
            None,
        ),
        (
            _wrapped(sa.DBAPIError, asyncpg.exceptions.AdminShutdownError("shutting down")),
            FailureKind.TRANSIENT,
            None,
        ),
        (
            _wrapped(sa.DBAPIError, asyncpg.exceptions.SerializationError("retry")),
            FailureKind.TRANSIENT,
            None,
        ),
        (
            _wrapped(sa.ProgrammingError, asyncpg.exceptions.UndefinedTableError("payments")),
            FailureKind.TRANSIENT,
            None,
        ),
        (sa.TimeoutError("pool exhausted"), FailureKind.TRANSIENT, None),
        (ConnectionResetError(), FailureKind.TRANSIENT, None),
        (TimeoutError(), FailureKind.TRANSIENT, None),
        (KafkaConnectionError("down"), FailureKind.TRANSIENT, None),
        (ProviderUnavailableError("sandbox", "503"), FailureKind.TRANSIENT, None),
        (
            PaygateError(ErrorCode.SERVICE_UNAVAILABLE, "try later"),
            FailureKind.TRANSIENT,
            None,
        ),
        (
            _raised_while_handling(RuntimeError("cleanup"), ConnectionResetError()),
            FailureKind.TRANSIENT,
            None,
        ),
        # Nobody knows: tried a bounded number of times.
        (
            _wrapped(sa.IntegrityError, asyncpg.exceptions.UniqueViolationError("lost a race")),
            FailureKind.UNKNOWN,
            "retries_exhausted",
        ),
        (
            sa.IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE")),
            FailureKind.UNKNOWN,
            None,
        ),
        (_unexpected(), FailureKind.UNKNOWN, "retries_exhausted"),
        (
            InvalidTransitionError(PaymentStatus.SUCCEEDED, PaymentStatus.FAILED),
            FailureKind.UNKNOWN,
            None,
        ),
        (ProviderTimeoutError("sandbox", "timed out"), FailureKind.UNKNOWN, None),
        (PaygateError(ErrorCode.INTERNAL_ERROR, "bug"), FailureKind.UNKNOWN, None),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None,
)
def test_each_failure_gets_its_verdict(
    error: BaseException, kind: FailureKind, reason: str | None
) -> None:
    failure = classify(error)
    assert failure.kind is kind
    if reason is not None:
        assert failure.reason == reason


# --- the dead-letter router's counter and headers -----------------------------------------


class _Client:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send_and_wait(self, topic: str, value: bytes, **kwargs: Any) -> None:
        self.sent.append({"topic": topic, "value": value, **kwargs})


class _Producer:
    def __init__(self) -> None:
        self.client = _Client()


def test_the_counters_reason_is_the_reason_without_its_detail() -> None:
    assert reason_kind("invalid_value:metadata.cart") == "invalid_value"
    assert reason_kind("retries_exhausted") == "retries_exhausted"


async def test_dead_letters_are_counted_by_code_and_reason_and_always_encodable() -> None:
    producer, metrics = _Producer(), Metrics(CollectorRegistry())
    router = DeadLetterRouter(cast(Any, producer), "dlq", metrics)

    for reason in ("invalid_value:orderId", "invalid_value:metadata.cart", "retries_exhausted"):
        await router.route(
            value=b"v",
            key=b"k",
            topic="payments.commands",
            partition=0,
            offset=1,
            error=PaygateError(ErrorCode.INVALID_TEXT, "bad \ud800 text"),
            reason=reason,
        )

    assert dead_lettered(metrics, code="invalid_text", reason="invalid_value") == 2
    assert dead_lettered(metrics, reason="retries_exhausted") == 1
    headers = dict(producer.client.sent[0]["headers"])
    # A catalogue error's message is storable from the start (domain.errors.storable_text);
    # the header's own encoding keeps any other text encodable (consumer.dead_letters).
    assert headers[HEADER_MESSAGE] == "bad \ufffd text".encode()
    assert headers[HEADER_REASON] == b"invalid_value:orderId"
