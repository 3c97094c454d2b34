"""The committed AsyncAPI document passes the AsyncAPI CLI's validation: the 3.0 spec, its
references resolved, and every referenced Avro schema parsed by the CLI's Avro parser."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.asyncapi_cli import validate

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _copy_of_the_document(tmp_path: Path) -> Path:
    """The document and the schemas it references, laid out as in the repository."""
    shutil.copytree(ROOT / "schemas" / "avro", tmp_path / "schemas" / "avro")
    (tmp_path / "http_facade").mkdir()
    return Path(shutil.copy(ROOT / "http_facade" / "asyncapi.json", tmp_path / "http_facade"))


def test_the_asyncapi_document_is_valid(tmp_path: Path):
    done = validate(ROOT / "http_facade" / "asyncapi.json", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "is valid" in done.stdout


def test_a_referenced_schema_that_is_not_avro_fails_the_validation(tmp_path: Path):
    """The check reaches into the referenced files: a broken one fails it."""
    document = _copy_of_the_document(tmp_path)
    broken = tmp_path / "schemas" / "avro" / "refund_payment.v2.avsc"
    broken.write_text(broken.read_text().replace('"type": "record"', '"type": "recrod"', 1))
    done = validate(document, tmp_path)
    assert done.returncode != 0
    assert "refundPayment" in done.stdout + done.stderr
