"""Fixtures only the integration tests need (the shared ones are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.stripe_mock import run_stripe_mock


@pytest.fixture(scope="session")
def stripe_mock_url() -> Iterator[str]:
    """One stripe-mock for the session, its PaymentIntents answering ``succeeded``."""
    with run_stripe_mock() as url:
        yield url
