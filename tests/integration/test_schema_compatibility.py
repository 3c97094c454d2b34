"""Every change of paygate's Avro schemas is checked by a real Avro compatibility checker:
a Schema Registry's (Apicurio 3.x, Confluent API), not a hand-written field comparison.

Each record's versions (``schemas/schema_ids.json``, in id order) are registered one after
another under the subject a registry-backed paygate would use, with the subject's rule set
to BACKWARD_TRANSITIVE: a new version must read everything any older one wrote. An
``.avsc`` change that breaks that fails this test; so does the registry's rule itself, as
the refused incompatible change shows.
"""

from __future__ import annotations

import http.client
import json
import uuid
from collections import defaultdict
from importlib import resources
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

pytestmark = pytest.mark.integration

# Where each record travels: its subject is "<topic>-<record full name>" (Confluent's
# TopicRecordNameStrategy), since the commands topic carries three record types.
_TOPIC_OF = {
    "CreatePayment": "payments.commands",
    "RefundPayment": "payments.commands",
    "CapturePayment": "payments.commands",
    "CancelPayment": "payments.commands",
    "PaymentResult": "payments.results",
    "RefundResult": "payments.results",
}


def _bundled_versions() -> dict[str, list[dict[str, Any]]]:
    """Record full name -> its schemas, oldest first."""
    root = resources.files("schemas")
    index = json.loads(root.joinpath("schema_ids.json").read_text())["schemas"]
    versions: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for _schema_id, file_name in sorted(index.items(), key=lambda item: int(item[0])):
        schema = json.loads(root.joinpath("avro", file_name).read_text())
        versions[f"{schema['namespace']}.{schema['name']}"].append(schema)
    return dict(versions)


class Registry:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._host, self._port, self._base = parts.hostname or "", parts.port, parts.path

    def call(self, method: str, path: str, body: object) -> tuple[int, Any]:
        connection = http.client.HTTPConnection(self._host, self._port, timeout=30)
        try:
            connection.request(
                method,
                self._base + path,
                json.dumps(body),
                {"Content-Type": "application/vnd.schemaregistry.v1+json"},
            )
            response = connection.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            connection.close()

    def require_backward_transitive(self, subject: str) -> None:
        status, answer = self.call(
            "PUT", f"/config/{quote(subject)}", {"compatibility": "BACKWARD_TRANSITIVE"}
        )
        assert status == 200, answer

    def register(self, subject: str, schema: dict[str, Any]) -> tuple[int, Any]:
        return self.call(
            "POST", f"/subjects/{quote(subject)}/versions", {"schema": json.dumps(schema)}
        )


def _subject(full_name: str, run: str) -> str:
    # A prefix of its own per run: the session's registry may hold other tests' subjects.
    return f"{run}.{_TOPIC_OF[full_name.rsplit('.', 1)[1]]}-{full_name}"


def test_every_bundled_schema_change_is_backward_transitive_compatible(schema_registry: str):
    registry = Registry(schema_registry)
    run = uuid.uuid4().hex[:8]
    versions = _bundled_versions()
    assert set(versions) == {f"paygate.payments.v1.{name}" for name in _TOPIC_OF}
    for full_name, schemas in versions.items():
        subject = _subject(full_name, run)
        registry.require_backward_transitive(subject)
        ids = []
        for number, schema in enumerate(schemas, start=1):
            status, answer = registry.register(subject, schema)
            assert status == 200, f"{full_name} version {number} refused: {answer}"
            ids.append(answer["id"])
        assert len(set(ids)) == len(schemas)  # each version got an id of its own


def test_an_incompatible_change_is_refused_by_the_registry(schema_registry: str):
    registry = Registry(schema_registry)
    subject = _subject("paygate.payments.v1.CreatePayment", uuid.uuid4().hex[:8])
    registry.require_backward_transitive(subject)
    newest = _bundled_versions()["paygate.payments.v1.CreatePayment"][-1]
    status, answer = registry.register(subject, newest)
    assert status == 200, answer
    # A new field without a default: the new reader cannot read what old writers wrote.
    broken = {**newest, "fields": [*newest["fields"], {"name": "merchantId", "type": "string"}]}
    status, answer = registry.register(subject, broken)
    assert status == 409, answer
