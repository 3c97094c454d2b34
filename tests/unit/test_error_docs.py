from pathlib import Path

import pytest

from domain.errors import CATALOGUE, ErrorCode
from paygate.error_docs import README_BEGIN, README_END, error_table, errors_page

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_every_code_has_a_catalogue_entry():
    assert set(CATALOGUE) == set(ErrorCode)
    for code, spec in CATALOGUE.items():
        assert spec.code is code
        assert 400 <= spec.http_status <= 599
        assert spec.meaning
        assert spec.action


def test_docs_errors_page_is_generated_from_the_catalogue():
    committed = (ROOT / "docs" / "errors.md").read_text()
    assert committed == errors_page(), "regenerate: python -m paygate.error_docs > docs/errors.md"


def test_readme_error_table_is_generated_from_the_catalogue():
    readme = (ROOT / "README.md").read_text()
    start = readme.index(README_BEGIN) + len(README_BEGIN)
    end = readme.index(README_END)
    assert readme[start:end].strip() == error_table().strip()


def test_readme_settings_table_is_generated_from_the_settings():
    from paygate.settings import settings_table

    readme = (ROOT / "README.md").read_text()
    start = readme.index("<!-- settings:begin -->") + len("<!-- settings:begin -->")
    end = readme.index("<!-- settings:end -->")
    assert readme[start:end].strip() == settings_table().strip()


def test_docs_metrics_page_is_generated_from_the_metrics_container():
    from telemetry.metrics import metrics_page

    committed = (ROOT / "docs" / "metrics.md").read_text()
    assert committed == metrics_page(), "regenerate: python -m telemetry.metrics > docs/metrics.md"
