"""Spans are scrubbed of account numbers before any processor exports them."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, Status, StatusCode, TraceFlags

from telemetry.span_scrubbing import ScrubbingSpanProcessor, scrubbed_span
from tests.support.builders import PAYEE_IBAN, SUCCESS_CARD

pytestmark = pytest.mark.unit


def test_every_string_of_a_span_is_scrubbed() -> None:
    span = ReadableSpan(
        name=f"GET /v1/payments/{SUCCESS_CARD}",
        attributes={
            "http.target": f"/v1/payments/{SUCCESS_CARD}?iban={PAYEE_IBAN}",
            "messaging.kafka.message.key": SUCCESS_CARD,
            "tags": ("plain", f"card {SUCCESS_CARD}"),
            "messaging.kafka.offset": 42,
        },
        events=[
            Event("exception", {"exception.message": f"bad {SUCCESS_CARD}"}, timestamp=1),
        ],
        status=Status(StatusCode.ERROR, f"refused {SUCCESS_CARD}"),
    )
    scrubbed = scrubbed_span(span)
    exported = repr(
        (
            scrubbed.name,
            dict(scrubbed.attributes or {}),
            [(e.name, dict(e.attributes or {})) for e in scrubbed.events],
            scrubbed.status.description,
        )
    )
    assert SUCCESS_CARD not in exported
    assert PAYEE_IBAN not in exported
    assert exported.count(f"****{SUCCESS_CARD[-4:]}") == 6
    assert (scrubbed.attributes or {})["messaging.kafka.offset"] == 42
    assert scrubbed.events[0].timestamp == 1
    assert scrubbed.status.status_code is StatusCode.ERROR


def test_a_span_with_nothing_to_mask_is_passed_on_as_it_is() -> None:
    span = ReadableSpan(
        name="payments.commands process",
        attributes={"messaging.kafka.message.key": "order-1796538959715"},
        events=[Event("note", {"k": "v"}, timestamp=1)],
    )
    assert scrubbed_span(span) is span


def test_the_processor_hands_its_inner_one_the_scrubbed_span() -> None:
    exporter = InMemorySpanExporter()
    processor = ScrubbingSpanProcessor(SimpleSpanProcessor(exporter))
    sampled = SpanContext(1, 1, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    processor.on_end(ReadableSpan(name="x", context=sampled, attributes={"key": SUCCESS_CARD}))
    [exported] = exporter.get_finished_spans()
    assert (exported.attributes or {})["key"] == f"****{SUCCESS_CARD[-4:]}"
    processor.shutdown()


def test_a_percent_encoded_number_in_a_url_is_masked_in_the_span() -> None:
    """aiohttp-server records the raw target: a number typed into a URL arrives encoded."""
    encoded = {
        "http.target": "/v1/payments/4242%204242%204242%204242?x=1",
        "http.url": "https://pay.example/v1/payments?note=%34%32%34%32%34%32%34%32"
        "%34%32%34%32%34%32%34%32&iban=de89%2D3704%2D0044%2D0532%2D0130%2D00",
        "url.path": "/v1/payments/" + "%E2%80%8B".join("4242424242424242"),
        "url.query": "orderId=1796538959715&limit=20",
    }
    scrubbed = dict(scrubbed_span(ReadableSpan(name="GET", attributes=encoded)).attributes or {})
    assert scrubbed == {
        "http.target": "/v1/payments/****4242?x=1",
        "http.url": "https://pay.example/v1/payments?note=****4242&iban=****3000",
        "url.path": "/v1/payments/****4242",
        "url.query": "orderId=1796538959715&limit=20",
    }
