"""The at-rest search the e2e teardown relies on finds a number wherever one is stored."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.support.builders import PAYEE_IBAN, SUCCESS_CARD, TIMEOUT_CARD
from tests.support.clear_numbers import CLEAR_ACCOUNT_NUMBERS, numbers_in, scan_sqlite

pytestmark = pytest.mark.integration


def _database(path: Path, *rows: tuple[str, bytes | None]) -> None:
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("CREATE TABLE accounts (masked TEXT, raw BLOB)")
        connection.executemany("INSERT INTO accounts VALUES (?, ?)", rows)
    connection.close()


def test_the_numbers_include_the_builders_and_every_sandbox_account() -> None:
    assert {SUCCESS_CARD, PAYEE_IBAN, TIMEOUT_CARD} <= set(CLEAR_ACCOUNT_NUMBERS)


def test_masked_numbers_are_clean(tmp_path: Path) -> None:
    _database(tmp_path / "clean.db", ("****4242", None), ("DE89****3000", b"f" * 32))
    scan = scan_sqlite(tmp_path / "clean.db")
    assert (scan.rows, scan.findings) == (2, [])


def test_a_number_in_text_or_bytes_is_found(tmp_path: Path) -> None:
    _database(tmp_path / "leaky.db", (f"card {SUCCESS_CARD}", None), ("x", PAYEE_IBAN.encode()))
    scan = scan_sqlite(tmp_path / "leaky.db")
    assert f"accounts: {SUCCESS_CARD}" in scan.findings
    assert f"accounts: {PAYEE_IBAN}" in scan.findings
    assert f"leaky.db (raw bytes): {SUCCESS_CARD}" in scan.findings


def test_hex_encoded_numbers_are_found() -> None:
    # How PostgreSQL prints a bytea column as text.
    assert numbers_in("\\x" + SUCCESS_CARD.encode().hex()) == [SUCCESS_CARD]
