"""A multi-row insert whose rows differ in their columns is refused before it is sent:
SQLAlchemy would take the columns from the first row and drop the others' extra values."""

from __future__ import annotations

from typing import Any

import pytest

from persistence.payment_rows import insert_rows
from persistence.tables import outbox

pytestmark = pytest.mark.unit


class _RecordingConnection:
    def __init__(self) -> None:
        self.executed: list[Any] = []

    async def execute(self, statement: Any, rows: Any = None) -> None:
        self.executed.append((statement, rows))


async def test_rows_of_one_shape_go_out_in_one_call() -> None:
    conn = _RecordingConnection()
    rows = [{"event_id": "e1", "topic": "t"}, {"event_id": "e2", "topic": "t"}]
    await insert_rows(conn, outbox, rows)  # type: ignore[arg-type]
    assert [sent for _, sent in conn.executed] == [rows]


async def test_a_row_with_an_extra_column_is_refused_and_nothing_is_sent() -> None:
    conn = _RecordingConnection()
    rows = [{"event_id": "e1"}, {"event_id": "e2", "trace_parent": "00-x"}]
    with pytest.raises(ValueError, match="trace_parent"):
        await insert_rows(conn, outbox, rows)  # type: ignore[arg-type]
    assert conn.executed == []


async def test_no_rows_send_nothing() -> None:
    conn = _RecordingConnection()
    await insert_rows(conn, outbox, [])  # type: ignore[arg-type]
    assert conn.executed == []
