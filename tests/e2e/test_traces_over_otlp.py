"""``paygate acquirer``, ``consumer`` and ``facade`` as processes, each with
``PAYGATE_OTLP_ENDPOINT`` set, export one trace per payment over OTLP/HTTP.

The receiver is a small OTLP/HTTP traces endpoint of the test's own (protobuf bodies
decoded with ``opentelemetry-proto``, the exporter's own message types). The processes
export in batches and flush when they stop, so the spans are read after SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from paygate.topics import ensure_topics
from tests.support.processes import ServiceProcess, environment_of, start_service
from tests.support.sandbox_accounts import SUCCESS_CARD
from tests.support.stack import Stack, create_api_key, isolated_settings, payment_body

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class ExportedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str


class Receiver:
    def __init__(self) -> None:
        self.spans: list[ExportedSpan] = []
        self.lock = threading.Lock()

    def take(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            service = next(
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            )
            for scope_spans in resource_spans.scope_spans:
                with self.lock:
                    self.spans.extend(
                        ExportedSpan(
                            service,
                            s.name,
                            s.trace_id.hex(),
                            s.span_id.hex(),
                            s.parent_span_id.hex(),
                        )
                        for s in scope_spans.spans
                    )


@contextlib.contextmanager
def otlp_receiver() -> Iterator[tuple[str, Receiver]]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            receiver.take(body)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", receiver
    finally:
        server.shutdown()
        server.server_close()


async def _pay(stack: Stack) -> str:
    async with (
        stack.session() as session,
        session.post(
            "/v1/payments",
            json=payment_body(SUCCESS_CARD),
            headers={"Idempotency-Key": uuid.uuid4().hex, "Prefer": "wait=30"},
        ) as answer,
    ):
        assert answer.status == 200, await answer.text()
        body = await answer.json()
        assert body["status"] == "succeeded", body
        return str(body["paymentRequestId"])


def test_each_process_exports_its_spans_of_one_trace_over_otlp(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    with otlp_receiver() as (endpoint, receiver):
        settings = isolated_settings(
            kafka_bootstrap,
            tmp_path,
            f"sqlite+aiosqlite:///{tmp_path / 'paygate.db'}",
            "traces",
            otlp_endpoint=endpoint,
        )
        asyncio.run(ensure_topics(settings))
        env = environment_of(settings)
        api_key = create_api_key(env, "traces")
        processes: list[ServiceProcess] = []
        try:
            acquirer = start_service(
                "acquirer", ["acquirer"], env=env, log_dir=tmp_path, announce_prefix="SANDBOX_URL="
            )
            processes.append(acquirer)
            env["PAYGATE_SANDBOX_URL"] = acquirer.announced
            processes.append(start_service("consumer", ["consumer"], env=env, log_dir=tmp_path))
            facade = start_service(
                "facade", ["facade"], env=env, log_dir=tmp_path, announce_prefix="PAYGATE_URL="
            )
            processes.append(facade)
            stack = Stack(
                facade.announced,
                tmp_path / "tls" / "localhost.crt",
                processes,
                second_url=facade.announced,
                api_key=api_key,
                other_api_key=api_key,
            )
            asyncio.run(_pay(stack))
        finally:
            # SIGTERM: each process flushes its batch of spans as it stops.
            for process in reversed(processes):
                process.stop()
        for process in processes:
            assert process.process.returncode == 0, process.log()[-3000:]
        spans = list(receiver.spans)

    [request] = [s for s in spans if s.name == "POST /v1/payments"]
    assert request.service == "paygate-facade"
    trace = [s for s in spans if s.trace_id == request.trace_id]
    by_service = {(s.service, s.name) for s in trace}
    assert ("paygate-facade", f"{settings.commands_topic} send") in by_service
    assert ("paygate-consumer", f"{settings.commands_topic} process") in by_service
    assert ("paygate-acquirer", "POST /v1/charges") in by_service
    assert ("paygate-consumer", f"{settings.results_topic} send") in by_service
    # Scrapes and probes make no traces.
    assert not [s for s in spans if s.name.endswith(("/metrics", "/healthz", "/readyz"))]
