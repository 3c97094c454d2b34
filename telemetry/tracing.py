"""OpenTelemetry tracing for one process: off unless configured, and then one trace per
payment, from the REST request (or the upstream producer) to the result event.

Off (the default), nothing is instrumented: no library is patched, no span is made, and
the helpers of :mod:`telemetry.trace_context` return at their first line. On, a process
calls :func:`start_tracing` once, before it creates any aiohttp application or session,
Kafka client or engine, and :func:`stop_tracing` at exit (which flushes the spans).

What is traced, and by what (the span names are in docs/operations.md):

- the facade's REST requests: ``opentelemetry-instrumentation-aiohttp-server`` (it
  replaces ``aiohttp.web.Application`` by a subclass that adds its middleware; the ops
  routes are excluded, so scrapes and probes make no traces);
- Kafka sends and receives, with the W3C ``traceparent`` in the record's headers:
  ``opentelemetry-instrumentation-aiokafka``;
- provider HTTP calls (the sandbox adapter, Stripe's SDK through aiohttp), with
  ``traceparent`` sent to the provider: ``opentelemetry-instrumentation-aiohttp-client``;
- database statements: ``opentelemetry-instrumentation-sqlalchemy``, per engine
  (:func:`trace_engine`);
- the consumer's handling of a command and the relay's publishing of an outbox row:
  :mod:`telemetry.trace_context`, since no library knows them.

Only one :class:`Tracing` is active per process at a time (the instrumentations patch
classes process-wide).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from telemetry import trace_context

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from sqlalchemy.ext.asyncio import AsyncEngine

# The standard variables that turn an OTLP exporter on without a paygate setting.
OTLP_ENDPOINT_VARIABLES: Final = (
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)
# Scrapes and probes are not requests worth a trace, and come every few seconds.
_EXCLUDED_URLS_VARIABLE: Final = "OTEL_PYTHON_AIOHTTP_SERVER_EXCLUDED_URLS"
_OPS_PATHS: Final = "/metrics,/healthz,/readyz"


@dataclass(frozen=True, slots=True)
class TracingConfig:
    """What a process needs to know to trace: where to export, and how much to keep.

    ``otlp_endpoint`` None with ``exporter_from_environment`` False means tracing is off.
    """

    otlp_endpoint: str | None
    sample_ratio: float
    exporter_from_environment: bool = False

    @property
    def enabled(self) -> bool:
        return self.otlp_endpoint is not None or self.exporter_from_environment

    @classmethod
    def of(cls, otlp_endpoint: str | None, sample_ratio: float) -> TracingConfig:
        """The configuration from paygate's settings and the standard ``OTEL_*`` variables:
        ``OTEL_SDK_DISABLED=true`` wins over everything, an endpoint in the settings over
        the variables'."""
        if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return cls(None, sample_ratio)
        from_environment = any(os.environ.get(name) for name in OTLP_ENDPOINT_VARIABLES)
        return cls(otlp_endpoint, sample_ratio, exporter_from_environment=from_environment)


class Tracing:
    """The process's tracer provider and the instrumentations it switched on.

    The SDK and the instrumentations are imported only when tracing starts: a process that
    does not trace does not load them.
    """

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
        from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
        from opentelemetry.instrumentation.aiokafka import AIOKafkaInstrumentor

        self.provider = provider
        self._kafka = AIOKafkaInstrumentor()
        self._client = AioHttpClientInstrumentor()
        self._server = AioHttpServerInstrumentor()

    def _instrument(self) -> None:
        from opentelemetry.metrics import NoOpMeterProvider

        os.environ.setdefault(_EXCLUDED_URLS_VARIABLE, _OPS_PATHS)
        no_meters = NoOpMeterProvider()  # paygate's metrics are Prometheus's
        self._kafka.instrument(tracer_provider=self.provider)
        self._client.instrument(tracer_provider=self.provider, meter_provider=no_meters)
        self._server.instrument(tracer_provider=self.provider, meter_provider=no_meters)
        trace_context.activate(self.provider.get_tracer("paygate"))

    def stop(self) -> None:
        """Undo the instrumentations and export what is left; safe to call twice."""
        global _active
        if _active is not self:
            return
        _active = None
        trace_context.deactivate()
        self._server.uninstrument()
        self._client.uninstrument()
        self._kafka.uninstrument()
        _engine_tracer().remove_all_event_listeners()
        self.provider.shutdown()


_active: Tracing | None = None


def start_tracing(
    config: TracingConfig,
    service_name: str,
    *,
    processor: SpanProcessor | None = None,
) -> Tracing | None:
    """Switch tracing on for this process, if ``config`` (or ``processor``) says so.

    Spans are exported over OTLP/HTTP (protobuf) in batches, to ``config.otlp_endpoint``
    or where the ``OTEL_EXPORTER_OTLP_*`` variables say; ``processor`` replaces that (the
    tests pass one over an in-memory exporter). ``OTEL_SERVICE_NAME`` and
    ``OTEL_RESOURCE_ATTRIBUTES`` are honoured. Root spans are kept with
    ``config.sample_ratio``; every other span follows its parent's decision, so a trace
    that arrives sampled (an upstream ``traceparent``) stays whole.
    """
    global _active
    if processor is None and not config.enabled:
        return None
    if _active is not None:
        raise RuntimeError("tracing is already started in this process")
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    from telemetry.span_scrubbing import ScrubbingSpanProcessor

    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or service_name})
    provider = TracerProvider(
        resource=resource, sampler=ParentBased(TraceIdRatioBased(config.sample_ratio))
    )
    if processor is None:
        # Imported here: the exporter pulls in protobuf and requests, which a process that
        # does not trace has no use for.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=config.otlp_endpoint))
    # Whichever processor exports, it sees spans scrubbed of account numbers (what the
    # instrumentations record includes URLs and Kafka keys, which are input).
    provider.add_span_processor(ScrubbingSpanProcessor(processor))
    tracing = Tracing(provider)
    tracing._instrument()
    _active = tracing
    return tracing


@contextlib.contextmanager
def process_tracing(config: TracingConfig, service_name: str) -> Iterator[Tracing | None]:
    """Tracing for the block (a process's life), if ``config`` switches it on."""
    tracing = start_tracing(config, service_name)
    try:
        yield tracing
    finally:
        if tracing is not None:
            tracing.stop()


def trace_engine(engine: AsyncEngine) -> None:
    """Trace ``engine``'s statements, if tracing is on (a no-op otherwise)."""
    tracing = _active
    if tracing is None:
        return
    from opentelemetry.metrics import NoOpMeterProvider

    tracer = tracing.provider.get_tracer("opentelemetry.instrumentation.sqlalchemy")
    usage = NoOpMeterProvider().get_meter("paygate").create_up_down_counter("unused")
    # SQLAlchemyInstrumentor().instrument(engine=...) does this for the first engine only
    # (an instrumentor instruments once per process); a process may open several.
    _engine_tracer()(tracer, engine.sync_engine, usage)


def _engine_tracer() -> Any:
    # Untyped in its package.
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

    return EngineTracer
