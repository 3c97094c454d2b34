"""One command message, from fetched to done: decoded, handled within bounded tries, or
dead-lettered.

Invariant: :meth:`RecordHandling.handle` returns only once the message is durably done, its
outcome committed by the handler or its bytes written to the dead-letter topic; only then
may the runner's committed offset pass it. Only cancellation (revocation, shutdown) ends it
sooner, and leaves the message to be redelivered.

How often a failing message is tried depends on why it fails (see consumer.failures):

* its writer schema is not known yet and the schema registry cannot be asked now: retried
  with back-off until it can (a registry outage never dead-letters a message);
* it does not decode, or a value breaks a rule (the text rule, an amount, an account
  number in metadata or in a message key that is not its order id, ...): it is
  dead-lettered at once with the codec's or the domain's reason;
* handling fails PERMANENTLY (a value the database refuses, a rule the domain says is
  broken): dead-lettered at once, reason ``database_refused`` or ``rule_violation``;
* handling fails for an UNKNOWN reason: tried ``max_attempts`` times in all, then
  dead-lettered with reason ``retries_exhausted``;
* handling fails TRANSIENTLY (database or broker unreachable): retried with back-off for as
  long as it lasts; these tries do not count, so a good message is never dead-lettered
  because the system around it is down.

So no message holds its key (and the partition's committed offset) for ever. The count is
kept in memory: a restart or a rebalance starts it again. Trying again is always safe, as
handlers are idempotent (the store turns a replay into the stored outcome). A command
dead-lettered after its write-ahead leaves its payment in doubt, where reconciliation finds
it as it would after a crash.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from aiokafka import ConsumerRecord

from consumer.failures import Failure, FailureKind, classify, outage_of
from domain.account_numbers import check_message_key
from domain.errors import ErrorCode, PaygateError
from schemas.codec import CodecError
from schemas.payments import Command
from schemas.registry_schemas import SchemaSourceUnavailable
from telemetry.outage_log import DependencyOutages

log = logging.getLogger("paygate.consumer")

_FIRST_BACKOFF_S = 0.1


class CommandDecoder(Protocol):
    def decode_any_command(self, data: bytes) -> Command: ...


class CommandHandler(Protocol):
    async def handle(self, command: Command) -> object: ...


class DeadLetters(Protocol):
    async def route(
        self,
        *,
        value: bytes | None,
        key: bytes | None,
        topic: str,
        partition: int,
        offset: int,
        error: PaygateError,
        reason: str,
        incoming_headers: Sequence[tuple[str, bytes]] = (),
    ) -> None: ...


class RecordHandling:
    def __init__(
        self,
        *,
        messages: CommandDecoder,
        handler: CommandHandler,
        dead_letters: DeadLetters,
        max_attempts: int,
        max_backoff_s: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        learn_writer: Callable[[bytes], Awaitable[None]] | None = None,
        outages: DependencyOutages | None = None,
    ) -> None:
        """``learn_writer`` is awaited with each message's bytes before it is decoded (a
        registry-backed schema source fetches an unknown writer schema there).

        ``outages`` logs the TRANSIENT failures, the dead letters that could not be written
        and the registry's unavailability: while a dependency is down, every message in
        flight fails at every back-off step, so they are logged once when the outage starts,
        with a summary now and then, and once when a message is handled again, never one
        line (let alone a traceback) per message and try. Failures of other kinds are
        bounded per message and keep their traceback."""
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._messages = messages
        self._learn_writer = learn_writer
        self._handler = handler
        self._dead_letters = dead_letters
        self._max_attempts = max_attempts
        self._max_backoff_s = max_backoff_s
        self._sleep = sleep
        self._outages = outages if outages is not None else consumer_outages()

    async def handle(self, record: ConsumerRecord) -> None:
        """Return once ``record`` is handled or dead-lettered (see the module docstring)."""
        command = await self._decoded(record)
        if command is None:
            return
        failed = 0
        backoff = _FIRST_BACKOFF_S
        while True:
            try:
                await self._handler.handle(command)
                self._outages.succeeded()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failure = classify(exc)
                if failure.kind is FailureKind.UNKNOWN:
                    failed += 1
                give_up = failure.kind is FailureKind.PERMANENT or failed >= self._max_attempts
                if failure.kind is FailureKind.TRANSIENT:
                    self._outages.failed(exc)
                else:
                    _log_failure(record, failure, failed, None if give_up else backoff)
                if give_up:
                    await self._dead_letter(record, *_dead_letter_of(failure, failed))
                    return
            await self._sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff_s)

    async def _writer_known(self, record: ConsumerRecord) -> None:
        """Fetch the writer schema if needed, retrying for as long as the registry is
        unreachable: not knowing yet is no reason to dead-letter."""
        if self._learn_writer is None:
            return
        backoff = _FIRST_BACKOFF_S
        while True:
            try:
                await self._learn_writer(record.value or b"")
                return
            except SchemaSourceUnavailable as exc:
                self._outages.failed(exc)
            await self._sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff_s)

    async def _decoded(self, record: ConsumerRecord) -> Command | None:
        """The command, or None once a message that can never decode is dead-lettered."""
        await self._writer_known(record)
        try:
            command = self._messages.decode_any_command(record.value or b"")
            # A key is stored nowhere, but the dead-letter topic keeps it for weeks and
            # the commands topic as long as its retention: a number there is refused like
            # one in metadata (the dead letter masks it), before any provider is called.
            check_message_key(record.key, command)
            return command
        except CodecError as exc:
            await self._dead_letter(record, exc, exc.reason)
        except PaygateError as exc:
            await self._dead_letter(record, exc, f"invalid_value:{exc.param or 'unknown'}")
        except Exception as exc:
            # Decoding is pure: whatever it raises, the same bytes raise again. The schema
            # should make this impossible, but a poison message must never stop the partition.
            error = PaygateError(
                ErrorCode.INVALID_REQUEST, f"invalid command: {type(exc).__name__}"
            )
            await self._dead_letter(record, error, "invalid_value")
        return None

    async def _dead_letter(self, record: ConsumerRecord, error: PaygateError, reason: str) -> None:
        """Write the dead letter, retrying until it is written: a broker that is down is
        never a reason to let the offset pass a message that is nowhere."""
        backoff = _FIRST_BACKOFF_S
        while True:
            try:
                await self._dead_letters.route(
                    value=record.value,
                    key=record.key,
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    error=error,
                    reason=reason,
                    incoming_headers=record.headers or (),
                )
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Kafka is down (or the write fails for a reason not known yet: then its
                # first line carries the traceback); retried until it is written.
                self._outages.failed(exc)
            await self._sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff_s)


def consumer_outages(clock: Callable[[], float] = time.monotonic) -> DependencyOutages:
    """The outage log of command handling, naming what is down."""
    return DependencyOutages(
        log, _unreachable, fallback="a dependency of dead-lettering", clock=clock
    )


def _unreachable(exc: BaseException) -> str | None:
    if isinstance(exc, SchemaSourceUnavailable):
        return "schema registry"
    return outage_of(exc)


def _dead_letter_of(failure: Failure, failed: int) -> tuple[PaygateError, str]:
    message = failure.message
    if failure.kind is FailureKind.UNKNOWN:
        message = f"handling failed {failed} times; the last time with {message}"
    return PaygateError(failure.code, message), failure.reason


def _log_failure(
    record: ConsumerRecord, failure: Failure, failed: int, retry_in: float | None
) -> None:
    extra = {**_where(record), "failure": failure.kind.value, "failed_tries": failed}
    if retry_in is None:
        log.exception("handling failed; dead-lettering the message", extra=extra)
    else:
        log.exception("handling failed; retrying in %.1fs", retry_in, extra=extra)


def _where(record: ConsumerRecord) -> dict[str, object]:
    return {"topic": record.topic, "partition": record.partition, "offset": record.offset}
