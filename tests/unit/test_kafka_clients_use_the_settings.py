"""Every Kafka client paygate builds gets its connection from ``kafka_client_options``.

A client built with ``bootstrap_servers=`` alone would connect in plaintext, without the
login, to a cluster that requires both: it is found here rather than in production.
"""

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = {"AIOKafkaConsumer", "AIOKafkaProducer", "AIOKafkaAdminClient"}
SOURCES = ["paygate", "producer", "consumer", "http_facade", "devtools"]


def _client_calls() -> list[tuple[str, ast.Call]]:
    calls = []
    for package in SOURCES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name)
                    and node.func.id in CLIENTS
                ):
                    calls.append((f"{path.relative_to(ROOT)}:{node.lineno}", node))
    return calls


def test_the_scan_finds_the_clients():
    assert len(_client_calls()) >= 10


def test_every_aiokafka_client_takes_the_connection_options_and_no_own_address():
    wrong = [
        where
        for where, call in _client_calls()
        if not any(keyword.arg is None for keyword in call.keywords)  # no **options
        or any(keyword.arg == "bootstrap_servers" for keyword in call.keywords)
    ]
    assert wrong == []
