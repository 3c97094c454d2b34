"""PAYGATE_RECONCILE_WAITING_MAX_S: the longest pause may not be shorter than the first."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from paygate.settings import Settings

pytestmark = pytest.mark.unit


def test_a_cap_below_the_minimum_age_is_refused_naming_both_settings() -> None:
    with pytest.raises(ValidationError, match="PAYGATE_RECONCILE_WAITING_MAX_S must be at least"):
        Settings(reconcile_min_age_s=60, reconcile_waiting_max_s=59)


def test_a_cap_equal_to_the_minimum_age_is_accepted() -> None:
    settings = Settings(reconcile_min_age_s=60, reconcile_waiting_max_s=60)
    assert settings.reconcile_waiting_max_s == 60
