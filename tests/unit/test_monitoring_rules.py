"""The alert rules are valid, unit-tested rule by rule, documented, and read real metrics.

``promtool check rules`` and ``promtool test rules`` (Debian's prometheus package; CI
installs it) run here so CI runs them. Every alert must have a test in which it fires and
one in which it stays quiet, annotations an operator can act on, and a runbook entry.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from domain.webhook_retry import RetryPolicy
from tests.support.promql import (
    PROMETHEUS_SERIES,
    exported_series_names,
    metric_names,
    run_promtool,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "monitoring" / "alerts.yml"
ALERT_TESTS = ROOT / "monitoring" / "alerts_test.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"

# What operators asked to be alerted on (issue 14), by the alert that covers it.
REQUIRED = {
    "PaygateConsumerLagGrowing",
    "PaygateOutboxStalled",
    "PaygateInDoubtAttemptsStuck",
    "PaygateDeadLetters",
    "PaygateProviderErrors",
    "PaygateCommandLatencyHigh",
    "PaygateFacade5xx",
    "PaygateNoConsumerAssigned",
    "PaygateStrayChargeFound",
    "PaygateProviderCircuitOpen",
    "PaygateResendWithheld",
}


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub makes for a page's headings."""
    anchors = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return anchors


def test_promtool_checks_the_rule_file() -> None:
    done = run_promtool("check", "rules", ALERTS)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_of_every_rule_pass() -> None:
    done = run_promtool("test", "rules", ALERT_TESTS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_the_required_alerts_exist() -> None:
    assert {rule["alert"] for rule in rules()} >= REQUIRED


def test_every_alert_is_tested_firing_and_quiet() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    fired: set[str] = set()
    quiet: set[str] = set()
    for test in tests:
        for case in test.get("alert_rule_test", []):
            (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in rules()}
    assert names - fired == set(), "alerts no test sees firing"
    assert names - quiet == set(), "alerts no test sees quiet"


def test_every_alert_has_severity_annotations_and_a_runbook_entry() -> None:
    anchors = github_anchors(RUNBOOK.read_text())
    for rule in rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        annotations = rule["annotations"]
        assert annotations["summary"], name
        assert annotations["description"], name
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert page == "docs/runbook.md", name
        assert anchor == name.lower(), name
        assert anchor in anchors, f"{name}: no runbook entry"


def test_the_operations_guide_lists_every_alert_with_its_severity() -> None:
    """docs/operations.md's alert table is what operators read first: it cannot miss a
    rule, nor give one another severity than the rule file."""
    guide = (ROOT / "docs" / "operations.md").read_text()
    listed = dict(re.findall(r"^\| `(Paygate\w+)` \| (\w+) \|", guide, flags=re.M))
    assert {rule["alert"]: rule["labels"]["severity"] for rule in rules()} == listed


def test_every_metric_an_alert_reads_is_exported() -> None:
    exported = exported_series_names() | PROMETHEUS_SERIES
    for rule in rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= exported, f"{rule['alert']}: {sorted(names - exported)}"


def test_the_secret_alert_spans_the_longest_wait_between_a_deliverys_retries() -> None:
    """A delivery that cannot be signed is retried on its back-off, up to hours apart: a
    window shorter than the longest wait resolves the alert between retries and fires it
    again at the next (one page per retry, all day). The window must outlast the wait."""
    (rule,) = [r for r in rules() if r["alert"] == "PaygateWebhookSecretUnavailable"]
    (window,) = re.findall(r"\[(\d+)([mh])\]", rule["expr"])
    unit = {"m": "minutes", "h": "hours"}[window[1]]
    span = timedelta(**{unit: int(window[0])})
    policy = RetryPolicy()  # the dispatcher's: only its window is a setting
    longest_wait = policy.cap * (1 + policy.jitter)
    assert span > longest_wait, (span, longest_wait)
    assert f"in the last {int(window[0])} hours" in rule["annotations"]["summary"]


def test_the_metric_name_reader_sees_through_promql_syntax() -> None:
    # The reader is what keeps the rules and the dashboard honest; check it on its own.
    expr = (
        'sum by (topic) (deriv(a_metric{x="b_not_metric", y=~"c|d"}[10m] offset 5m))'
        " > on() group_left(e_label) max(other_metric) * 1e3"
    )
    assert metric_names(expr) == {"a_metric", "other_metric"}
