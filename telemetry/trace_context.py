"""Where paygate itself carries a trace: through the consumer, the group commit and the
outbox row, which no instrumentation library knows.

Every function here starts with one test of a module global and returns at once while
tracing is off (:mod:`telemetry.tracing` activates it), so the paths that call them per
message or per write cost a function call when nothing traces.

- :func:`processing` wraps the consumer's handling of one command in a span
  ``<topic> process`` whose parent is the ``traceparent`` in the record's headers (the
  facade's send, or an upstream service's own trace);
- :func:`current_traceparent` is the W3C ``traceparent`` of the span active now, as stored
  in an outbox row: the relay publishes the row later, in another transaction and task,
  and :func:`publishing` makes that stored context the parent of its send;
- :func:`captured` and :func:`restored` carry the caller's context into the group commit's
  flusher task, so a caller's statements are traced under the caller's span.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Final

from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Tracer

TRACEPARENT: Final = "traceparent"

_tracer: Tracer | None = None


def activate(tracer: Tracer) -> None:
    global _tracer
    _tracer = tracer


def deactivate() -> None:
    global _tracer
    _tracer = None


def is_active() -> bool:
    return _tracer is not None


def current_traceparent() -> str | None:
    """The active span's ``traceparent``; None when tracing is off or no span is active."""
    if _tracer is None:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get(TRACEPARENT)


# What the helpers return while tracing is off: reusable, and cheaper than a generator.
_NOTHING: Final[contextlib.AbstractContextManager[None]] = contextlib.nullcontext()


def processing(
    topic: str,
    partition: int,
    offset: int,
    headers: Sequence[tuple[str, bytes]] | None,
) -> contextlib.AbstractContextManager[None]:
    """A ``<topic> process`` span around handling one record, child of its producer's."""
    tracer = _tracer
    if tracer is None:
        return _NOTHING
    return _processing(tracer, topic, partition, offset, headers)


@contextlib.contextmanager
def _processing(
    tracer: Tracer,
    topic: str,
    partition: int,
    offset: int,
    headers: Sequence[tuple[str, bytes]] | None,
) -> Iterator[None]:
    parent = propagate.extract(_headers_carrier(headers))
    with tracer.start_as_current_span(
        f"{topic} process",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": topic,
            "messaging.destination.partition.id": str(partition),
            "messaging.kafka.offset": offset,
        },
    ):
        yield


def publishing(traceparent: str | None) -> contextlib.AbstractContextManager[None]:
    """Make the stored ``traceparent`` the active context (the parent of a send)."""
    if _tracer is None or traceparent is None:
        return _NOTHING
    return _attached(propagate.extract({TRACEPARENT: traceparent}))


def captured() -> Context | None:
    """The caller's context, to be :func:`restored` in another task; None when off."""
    if _tracer is None:
        return None
    return otel_context.get_current()


def restored(context: Context | None) -> contextlib.AbstractContextManager[None]:
    """Make a :func:`captured` context the active one for the block."""
    if context is None:
        return _NOTHING
    return _attached(context)


@contextlib.contextmanager
def _attached(context: Context) -> Iterator[None]:
    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)


def _headers_carrier(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    carrier: dict[str, str] = {}
    for key, value in headers or ():
        if key.lower() in {"traceparent", "tracestate"} and value is not None:
            carrier[key.lower()] = value.decode("latin-1")
    return carrier
