"""schemathesis against the live HTTPS facade: generated requests, 0 server errors, 0 lies.

The sandbox acquirer, the consumer and the facade run as ``paygate`` processes on the
session's Kafka broker and a PostgreSQL database, with an API key issued by
``paygate apikey create`` and a rate limit no run reaches. schemathesis reads the document
from the package (``http_facade/openapi.json``, the very file ``/openapi.json`` serves;
read from that URL, schemathesis would leave that operation out), trusts the facade's
self-signed certificate, and runs every phase (examples, coverage, fuzzing, stateful:
created payments are read and refunded through the links it infers from ``Location``).
Every response must be below 500 and match the document: status listed, content type,
headers, body schema.

By hand, against ``make dev``: see docs/api.md.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import http_facade
from http_facade.openapi_routes import openapi_document
from paygate.topics import ensure_topics
from tests.support.child_env import child_environment
from tests.support.processes import ServiceProcess, environment_of, start_service
from tests.support.stack import create_api_key, isolated_settings

pytestmark = pytest.mark.e2e

# Every check that compares a response with the document, and the 5xx check.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")
# Per operation and phase; with the coverage phase's cases this is well over the minimum.
MAX_EXAMPLES = 60
MIN_CASES = 500
SEED = 20261126
# A bound for a hung run, far above a normal one (about 15 seconds on two cores).
RUN_TIMEOUT_S = 900
DOCUMENT_PATH = Path(http_facade.__file__).parent / "openapi.json"
HOOKS_PATH = Path(__file__).parent / "schemathesis_hooks.py"


@dataclass
class Facade:
    url: str
    cert: Path
    api_key: str
    processes: list[ServiceProcess]


@pytest.fixture(scope="module")
def facade(
    kafka_bootstrap: str, postgres_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Facade]:
    work = tmp_path_factory.mktemp("schemathesis-stack")
    settings = isolated_settings(
        kafka_bootstrap,
        work,
        postgres_database_url,
        "st",
        # Generated requests come fast and from one client: no 429s in this run.
        rate_limit_per_s=100_000.0,
        rate_limit_burst=1_000_000,
        # Generated Prefer: wait=N headers wait at most this long.
        max_wait_s=2.0,
    )
    asyncio.run(ensure_topics(settings))
    env = environment_of(settings)
    api_key = create_api_key(env, "schemathesis")
    processes: list[ServiceProcess] = []
    try:
        acquirer = start_service(
            "acquirer", ["acquirer"], env=env, log_dir=work, announce_prefix="SANDBOX_URL="
        )
        processes.append(acquirer)
        env["PAYGATE_SANDBOX_URL"] = acquirer.announced
        processes.append(start_service("consumer", ["consumer"], env=env, log_dir=work))
        served = start_service(
            "facade", ["facade"], env=env, log_dir=work, announce_prefix="PAYGATE_URL="
        )
        processes.append(served)
        yield Facade(served.announced, work / "tls" / "localhost.crt", api_key, processes)
    finally:
        for process in reversed(processes):
            process.stop()
    for process in processes:
        assert process.process.returncode == 0, (
            f"{process.name} exited badly:\n{process.log()[-3000:]}"
        )
        assert api_key.rsplit("_", 1)[1] not in process.log(), f"{process.name} logged the key"


def schemathesis_command(url: str, cert: Path, api_key: str, report: Path) -> list[str]:
    """``st run`` against a live facade; docs/api.md shows the same by hand."""
    return [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        str(DOCUMENT_PATH),
        "--url",
        url,
        "--tls-verify",
        str(cert),
        "--header",
        f"Authorization: Bearer {api_key}",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--generation-database",
        "none",
        "--request-timeout",
        "30",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        "--no-color",
    ]


def test_generated_requests_find_no_server_error_and_no_schema_violation(
    facade: Facade, tmp_path: Path
) -> None:
    report_path = tmp_path / "schemathesis.json"
    run = subprocess.run(
        schemathesis_command(facade.url, facade.cert, facade.api_key, report_path),
        cwd=tmp_path,
        env=child_environment({"SCHEMATHESIS_HOOKS": str(HOOKS_PATH)}),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    output = run.stdout[-6000:] + run.stderr[-3000:]
    assert report_path.exists(), f"schemathesis wrote no report:\n{output}"
    report: dict[str, Any] = json.loads(report_path.read_text())
    assert report["complete"], output
    assert report["errors"] == [], output
    assert report["failures"] == [], output
    assert report["test_cases"]["with_failures"] == 0, output
    assert report["test_cases"]["errored"] == 0, output
    assert report["test_cases"]["generated"] >= MIN_CASES, output
    documented = sum(
        method in item for item in openapi_document()["paths"].values() for method in METHODS
    )
    operations = report["operations"]
    assert operations["tested"] == operations["total"] == documented, output
    assert run.returncode == 0, output

    facade_log = next(p for p in facade.processes if p.name == "facade").log()
    assert "unhandled error in request handler" not in facade_log
