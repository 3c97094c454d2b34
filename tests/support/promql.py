"""PromQL in tests: promtool as the parser, and the metric names an expression reads.

promtool has no "parse this expression" command, so expressions are written into a rule
file of recording rules and checked with ``promtool check rules``, which parses each.
The metric names are then taken from the parsed-valid text by a small tokenizer: strings,
label matchers, ranges and grouping clauses are cut out; what remains that is not a
function, an aggregation or a keyword names a metric.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Final

import yaml

from telemetry.metrics import Metrics
from tests.support.services import service_missing

# Grafana's variables, replaced by what Prometheus would be sent.
GRAFANA_VARIABLES: Final = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
# Series Prometheus itself writes for every target.
PROMETHEUS_SERIES: Final = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

_KEYWORDS: Final = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
    | {"and", "or", "unless", "inf", "nan", "atan2"}
)
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_OFFSET = re.compile(r"\boffset\s+-?[0-9a-z]+")
_NUMBERS = re.compile(r"(?<![A-Za-z_:])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*(?=\s*(\()?)")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        service_missing("promtool is not installed (Debian package prometheus)")
    assert found is not None
    return found


def run_promtool(
    *args: str | Path, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``promtool <args>``, with ``input_text`` on its standard input."""
    return subprocess.run(
        [promtool(), *map(str, args)],
        input=input_text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def with_grafana_variables_replaced(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def check_expressions(expressions: Iterable[str], work: Path) -> None:
    """Fail unless ``promtool check rules`` parses every expression."""
    rules = [
        {"record": f"paygate:check_{index}", "expr": with_grafana_variables_replaced(expr)}
        for index, expr in enumerate(expressions)
    ]
    rule_file = work / "expressions.rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "check", "rules": rules}]}))
    done = run_promtool("check", "rules", rule_file)
    assert done.returncode == 0, done.stdout + done.stderr


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` (valid PromQL) selects."""
    text = with_grafana_variables_replaced(expr)
    for pattern in (_STRINGS, _MATCHERS, _RANGES, _GROUPING, _OFFSET, _NUMBERS):
        text = pattern.sub(" ", text)
    names: set[str] = set()
    for match in _IDENTIFIER.finditer(text):
        called = match.group(1) is not None
        if not called and match.group(0).lower() not in _KEYWORDS:
            names.add(match.group(0))
    return names


def exported_series_names() -> frozenset[str]:
    """Every series name a paygate process exposes: gauges as named, counters with
    ``_total``, histograms' ``_bucket``, ``_count`` and ``_sum``."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_count", "_sum"))
        else:
            names.add(family.name)
    return frozenset(names)
