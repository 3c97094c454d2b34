"""``PAYGATE_SQLITE_SYNCHRONOUS``: durable (``full``) unless ``normal`` is chosen explicitly."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from paygate.settings import Settings
from persistence.engine import SqliteSynchronous

pytestmark = pytest.mark.unit


def test_full_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAYGATE_SQLITE_SYNCHRONOUS", raising=False)
    assert Settings().sqlite_synchronous is SqliteSynchronous.FULL


@pytest.mark.parametrize(
    ("text", "chosen"),
    [
        ("full", SqliteSynchronous.FULL),
        ("FULL", SqliteSynchronous.FULL),
        ("normal", SqliteSynchronous.NORMAL),
        ("Normal", SqliteSynchronous.NORMAL),
    ],
)
def test_normal_is_an_explicit_choice_in_any_case(
    monkeypatch: pytest.MonkeyPatch, text: str, chosen: SqliteSynchronous
) -> None:
    monkeypatch.setenv("PAYGATE_SQLITE_SYNCHRONOUS", text)
    assert Settings().sqlite_synchronous is chosen


@pytest.mark.parametrize("text", ["off", "extra", "0", "1", ""])
def test_other_values_are_refused(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    # OFF would lose commits on a process crash; EXTRA and the numeric spellings are not
    # offered, so that a setting read in a config file always says what it means.
    monkeypatch.setenv("PAYGATE_SQLITE_SYNCHRONOUS", text)
    with pytest.raises(ValidationError, match="sqlite_synchronous"):
        Settings()
