"""Tracing is off unless configured, and off patches nothing; the standard OTEL_* variables
switch it on (or off) as they would any OpenTelemetry SDK."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from paygate.settings import Settings
from telemetry import trace_context
from telemetry.tracing import TracingConfig, start_tracing

pytestmark = pytest.mark.unit

OTEL_VARIABLES = (
    "OTEL_SDK_DISABLED",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
)


@pytest.fixture(autouse=True)
def no_otel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_by_default_tracing_is_off_and_nothing_is_patched() -> None:
    settings = Settings()
    config = TracingConfig.of(settings.otlp_endpoint, settings.trace_sample_ratio)
    application, send = web.Application, AIOKafkaProducer.send

    assert not config.enabled
    assert start_tracing(config, "paygate-test") is None
    assert web.Application is application
    assert AIOKafkaProducer.send is send
    assert not trace_context.is_active()
    assert trace_context.current_traceparent() is None
    assert trace_context.captured() is None


def test_an_endpoint_in_the_settings_or_the_standard_variables_turns_it_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert TracingConfig.of("http://collector:4318/v1/traces", 1.0).enabled
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert TracingConfig.of(None, 1.0).enabled


def test_otel_sdk_disabled_wins_over_every_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:4318/v1/traces")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not TracingConfig.of("http://collector:4318/v1/traces", 1.0).enabled


def test_the_sample_ratio_is_a_share(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYGATE_TRACE_SAMPLE_RATIO", "1.5")
    with pytest.raises(ValueError, match="trace_sample_ratio"):
        Settings()


def test_on_it_patches_and_stopping_undoes_it() -> None:
    application, send = web.Application, AIOKafkaProducer.send
    spans = InMemorySpanExporter()
    tracing = start_tracing(TracingConfig(None, 1.0), "t", processor=SimpleSpanProcessor(spans))
    assert tracing is not None
    try:
        assert web.Application is not application
        assert AIOKafkaProducer.send is not send
        with pytest.raises(RuntimeError, match="already started"):
            start_tracing(TracingConfig(None, 1.0), "t", processor=SimpleSpanProcessor(spans))
        with trace_context.processing("topic", 0, 5, None):
            parent = trace_context.current_traceparent()
        assert parent is not None
        [span] = spans.get_finished_spans()
        assert span.name == "topic process"
        assert parent.split("-")[2] == format(span.context.span_id, "016x")
    finally:
        tracing.stop()
        tracing.stop()  # twice is harmless
    assert web.Application is application
    assert AIOKafkaProducer.send is send
    assert trace_context.current_traceparent() is None
