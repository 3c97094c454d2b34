"""What one record of the results topic means to waiting requests, whatever the record holds.

Invariant: :meth:`PaymentEvents.handle` never raises an ``Exception``. A record that is
not a usable result event is skipped: counted once in
``paygate_result_listener_errors_total`` under one :class:`SkipReason` and logged once,
at warning level, with its position and error code but no stack trace, and no message
text except a :class:`~domain.errors.PaygateError`'s (which never holds account data).
One bad record can therefore neither stop the listener nor flood or leak into the log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from domain.errors import PaygateError
from domain.events import PaymentResult
from schemas.codec import CodecError
from schemas.payments import ResultEvent
from telemetry.metrics import Metrics

log = logging.getLogger("paygate.http.results")


class SkipReason(StrEnum):
    """The ``reason`` label of ``paygate_result_listener_errors_total``: a fixed, small set."""

    # Not a result event in the wire format: garbage bytes, an unknown schema id, a record
    # of another kind, a truncated or undecodable Avro body.
    UNDECODABLE = "undecodable"
    # Valid Avro whose values break the domain's rules: currency ZZZ, an unknown status or
    # error code, a value missing where one is required.
    INVALID = "invalid"
    # Anything else, such as a failure while waking the waiters: a bug to look into.
    UNEXPECTED = "unexpected"


class ResultDecoder(Protocol):
    async def learn_writer(self, data: bytes) -> None:
        """Make the writer schema of ``data`` known before decoding (a registry-backed
        source fetches an id it has not seen, once, bounded in time, and keeps it); raises
        ``SchemaSourceUnavailable`` when the registry cannot answer now."""
        ...

    def decode_any_result(self, data: bytes) -> ResultEvent: ...


@dataclass(frozen=True, slots=True)
class ResultRecord:
    """One record of the results topic, as a feed delivers it."""

    value: bytes | None
    partition: int
    offset: int


class PaymentEvents:
    def __init__(
        self,
        *,
        decoder: ResultDecoder,
        on_final: Callable[[str], None],
        on_refusal: Callable[[str, str], None],
        metrics: Metrics,
    ) -> None:
        self._decoder = decoder
        self._on_final = on_final
        self._on_refusal = on_refusal
        self._errors = metrics.result_listener_errors

    def handle(self, record: ResultRecord) -> None:
        """Call ``on_final`` with the payment's (or refund's) id if the record is a final
        result, ``on_refusal`` with that id and the event id if it only answers a refused
        command (``refusal``: no state of the id, whatever its status says); skip it
        (counted and logged) if it is not a usable result event."""
        try:
            event = self._decoder.decode_any_result(record.value or b"")
        except CodecError as exc:
            self._skip(record, SkipReason.UNDECODABLE, f"{exc.code.value}:{exc.reason}", exc)
            return
        except PaygateError as exc:
            self._skip(record, SkipReason.INVALID, exc.code.value, exc)
            return
        except (KeyError, TypeError, ValueError) as exc:
            self._skip(record, SkipReason.INVALID, type(exc).__name__)
            return
        except Exception as exc:
            self._skip(record, SkipReason.UNEXPECTED, type(exc).__name__)
            return
        try:
            if event.refusal:
                self._on_refusal(_waited_id(event), event.event_id)
            elif _ends_a_wait(event):
                self._on_final(_waited_id(event))
        except Exception as exc:
            self._skip(record, SkipReason.UNEXPECTED, type(exc).__name__)

    def _skip(
        self,
        record: ResultRecord,
        reason: SkipReason,
        error: str,
        safe: PaygateError | None = None,
    ) -> None:
        self._errors.labels(reason.value).inc()
        log.warning(
            "result event skipped (%s): %s",
            reason.value,
            safe.message if safe is not None else error,
            extra={
                "reason": reason.value,
                "error": error,
                "partition": record.partition,
                "offset": record.offset,
            },
        )


def _waited_id(event: ResultEvent) -> str:
    return event.payment_request_id if isinstance(event, PaymentResult) else event.refund_id


def _ends_a_wait(event: ResultEvent) -> bool:
    """A final result, or a payment that needs its payer (see http_facade.result_waiters)."""
    if isinstance(event, PaymentResult):
        return event.status.ends_a_wait
    return event.status.is_final
