"""The full account numbers tests send, and a search for them where they must never be.

Payments are stored with masked numbers and keyed fingerprints only; logs carry neither
full numbers nor keys. After an e2e run, :func:`scan_sqlite` and :func:`scan_postgres`
read every row of every table (and, for SQLite, the raw bytes of the database files, free
pages and the write-ahead log included) and report any full number found;
:func:`scan_files` reads the raw bytes of every file under a directory (a broker's log
segments, a run's work dir with its logs). The end-to-end proof
(tests/e2e/test_no_clear_numbers.py) and the chaos run's (tests/e2e/test_chaos.py) share
them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from providers.sandbox.accounts import TEST_ACCOUNTS
from tests.support.builders import (
    DECLINED_CARD,
    INSUFFICIENT_FUNDS_CARD,
    PAYEE_IBAN,
    SUCCESS_CARD,
)

# Every full number an e2e test sends: the builders' cards and payee IBAN, and every sandbox
# test account (the failure-class tests pick their outcome by choosing one).
CLEAR_ACCOUNT_NUMBERS: Final = tuple(
    dict.fromkeys(
        [SUCCESS_CARD, DECLINED_CARD, INSUFFICIENT_FUNDS_CARD, PAYEE_IBAN, *TEST_ACCOUNTS]
    )
)

# Beside a SQLite database, the files that may hold pages of it.
_SQLITE_SIDE_FILES: Final = ("-wal", "-shm", "-journal")


def numbers_in(data: str | bytes, numbers: Iterable[str] = CLEAR_ACCOUNT_NUMBERS) -> list[str]:
    """The ``numbers`` ``data`` contains, as text or hex-encoded (PostgreSQL's ``bytea``)."""
    blob = data.encode() if isinstance(data, str) else data
    lowered = blob.lower()
    return [
        number
        for number in numbers
        if number.encode() in blob or number.encode().hex().encode() in lowered
    ]


def scan_files(root: Path, numbers: Iterable[str] = CLEAR_ACCOUNT_NUMBERS) -> dict[str, list[str]]:
    """Every file under ``root``, by path relative to it, with the ``numbers`` its raw bytes
    hold (most hold none). Raw bytes are what a reader of the disk gets: Kafka records are
    stored as produced, and paygate's producers do not compress, so nothing is hidden."""
    wanted = tuple(numbers)
    return {
        str(path.relative_to(root)): numbers_in(path.read_bytes(), wanted)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@dataclass
class Scan:
    """What a scan read (``rows``, so a test can tell it was not empty) and found."""

    place: str
    rows: int = 0
    findings: list[str] = field(default_factory=list)

    def note(self, where: str, data: str | bytes) -> None:
        self.findings.extend(f"{where}: {number}" for number in numbers_in(data))


def scan_sqlite(path: Path) -> Scan:
    """Every row of every table of the SQLite file at ``path``, then its raw bytes."""
    scan = Scan(str(path))
    # The raw bytes first: opening the database may checkpoint and remove the WAL.
    for file in [path, *(path.with_name(path.name + side) for side in _SQLITE_SIDE_FILES)]:
        if file.exists():
            scan.note(f"{file.name} (raw bytes)", file.read_bytes())
    connection = sqlite3.connect(path)
    try:
        tables = [
            name
            for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        for table in tables:
            quoted = '"' + table.replace('"', '""') + '"'
            for row in connection.execute(f"SELECT * FROM {quoted}"):  # noqa: S608
                scan.rows += 1
                for value in row:
                    if isinstance(value, str | bytes):
                        scan.note(table, value)
    finally:
        connection.close()
    return scan


async def scan_postgres(database_url: str) -> Scan:
    """Every row of every table of the database, each row read as text."""
    scan = Scan("postgresql")
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            tables = await connection.execute(
                text(
                    "SELECT table_schema, table_name FROM information_schema.tables "
                    "WHERE table_type = 'BASE TABLE' "
                    "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
                )
            )
            for schema, table in tables.all():
                name = ".".join('"' + part.replace('"', '""') + '"' for part in (schema, table))
                rows = await connection.execute(text(f"SELECT t::text FROM {name} AS t"))  # noqa: S608
                for (row,) in rows:
                    scan.rows += 1
                    scan.note(table, row)
    finally:
        await engine.dispose()
    return scan
