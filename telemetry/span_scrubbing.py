"""No clear account number leaves the process in a span: the traces' last line of defence.

The instrumentations record what they see, and some of it is input: aiohttp-server a
request's path and query string (``http.target``, ``http.url``, ``url.path``,
``url.query``: a client may type a number into a URL), aiokafka every record's key
(``messaging.kafka.message.key``: an upstream producer's key, which the consumer may then
refuse for holding a number), an exception event its message and traceback. So, as the log
scrubber does for a log line (paygate.jsonlog), every finished span is scrubbed before any
processor sees it: each string in it (name, attribute values, event names and attributes,
status description) passes :func:`domain.account_numbers.scrub`, which masks what the one
detector finds to its last four. A span with nothing to mask is passed on as it is.

Only what the detector reads is masked, as in a log line: it reads percent-encoding (a
number typed into a URL reaches ``http.target`` encoded, ``4242%204242...``) and skips
invisible characters (domain.text_folding); a form it does not read passes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import Status
from opentelemetry.util.types import AttributeValue

from domain.account_numbers import scrub

# The shortest text the detector can find anything in: a 12-digit card (an IBAN is 15).
_SHORTEST: Final = 12


def _scrubbed_text(text: str) -> str:
    return text if len(text) < _SHORTEST else scrub(text)


def _scrubbed_value(value: AttributeValue) -> AttributeValue:
    if isinstance(value, str):
        return _scrubbed_text(value)
    if isinstance(value, Sequence) and any(isinstance(item, str) for item in value):
        return tuple(_scrubbed_text(item) if isinstance(item, str) else item for item in value)
    return value


def _scrubbed_attributes(
    attributes: Mapping[str, AttributeValue] | None,
) -> dict[str, AttributeValue] | None:
    if attributes is None:
        return None
    return {key: _scrubbed_value(value) for key, value in attributes.items()}


def scrubbed_span(span: ReadableSpan) -> ReadableSpan:
    """``span``, or a copy of it with every account number the detector finds masked."""
    attributes = _scrubbed_attributes(span.attributes)
    events = [
        Event(_scrubbed_text(event.name), _scrubbed_attributes(event.attributes), event.timestamp)
        for event in span.events
    ]
    name = _scrubbed_text(span.name)
    description = span.status.description
    status = (
        span.status
        if description is None
        else Status(span.status.status_code, _scrubbed_text(description))
    )
    unchanged = (
        name == span.name
        and attributes == (None if span.attributes is None else dict(span.attributes))
        and all(
            (new.name, new.attributes)
            == (old.name, None if old.attributes is None else dict(old.attributes))
            for new, old in zip(events, span.events, strict=True)
        )
        and status.description == description
    )
    if unchanged:
        return span
    return ReadableSpan(
        name=name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        events=events,
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class ScrubbingSpanProcessor(SpanProcessor):
    """Hands ``inner`` (the exporting processor) each finished span scrubbed."""

    def __init__(self, inner: SpanProcessor) -> None:
        self._inner = inner

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._inner.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        self._inner.on_end(scrubbed_span(span))

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)
