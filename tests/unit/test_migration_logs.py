"""Alembic's start-up chatter stays out of the logs; the revisions it runs stay in."""

from __future__ import annotations

import logging

import pytest

import persistence.migrate  # noqa: F401 - installs the filter

pytestmark = pytest.mark.unit


def _passes(message: str) -> bool:
    logger = logging.getLogger("alembic.runtime.migration")
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 1, message, (), None)
    return bool(logger.filter(record))


def test_only_the_revisions_run_are_logged():
    assert _passes("Running upgrade 0001 -> 0002, Refunds, API clients and API keys.")
    assert not _passes("Context impl SQLiteImpl.")
    assert not _passes("Will assume non-transactional DDL.")
