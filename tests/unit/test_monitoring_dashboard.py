"""The Grafana dashboard: generated, every query valid PromQL naming exported metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from telemetry.dashboard import dashboard_json
from tests.support.promql import (
    PROMETHEUS_SERIES,
    check_expressions,
    exported_series_names,
    metric_names,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "monitoring" / "grafana" / "paygate.json"

# The panels operators asked for (issue 14).
REQUIRED_PANELS = {
    "Payment rate by status",
    "Command to result latency",
    "Provider latency",
    "Provider errors",
    "Consumer lag",
    "Dead letters",
    "Outbox backlog",
    "In-doubt attempts",
    "Reconciliations",
    "HTTP requests by route",
    "HTTP errors",
    "HTTP latency",
    "Rate-limited requests",
    # Issue 15: webhook deliveries, by outcome, and their retries.
    "Webhook deliveries by outcome",
    "Webhook retries and attempt time",
    # Money left for an operator: withheld re-sends, unanswered stray checks and reversals.
    "Left for an operator or still unanswered",
}


def panels() -> list[dict[str, Any]]:
    document = json.loads(DASHBOARD.read_text())
    return [p for p in document["panels"] if p["type"] != "row"]


def test_the_committed_dashboard_is_the_generated_one() -> None:
    assert DASHBOARD.read_text() == dashboard_json(), (
        "regenerate: python -m telemetry.dashboard > monitoring/grafana/paygate.json"
    )


def test_the_required_panels_exist_and_each_has_queries() -> None:
    titles = {p["title"] for p in panels()}
    assert titles >= REQUIRED_PANELS
    for panel in panels():
        assert panel["targets"], panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]


def test_every_panel_query_parses_as_promql(tmp_path: Path) -> None:
    check_expressions([t["expr"] for p in panels() for t in p["targets"]], tmp_path)


def test_every_panel_query_names_only_exported_metrics() -> None:
    exported = exported_series_names() | PROMETHEUS_SERIES
    for panel in panels():
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, f"{panel['title']}: {target['expr']}"
            assert names <= exported, f"{panel['title']}: {sorted(names - exported)}"


def test_a_query_naming_an_unknown_metric_or_bad_syntax_is_caught(tmp_path: Path) -> None:
    assert "paygate_no_such_metric" not in exported_series_names()
    assert metric_names("sum(rate(paygate_no_such_metric[5m]))") == {"paygate_no_such_metric"}
    with pytest.raises(AssertionError):
        check_expressions(["sum(rate(paygate_commands_consumed_total[5m])"], tmp_path)
