"""helm for the tests: where the binary is, and the chart rendered to its objects.

First found wins: ``HELM_BIN``; ``~/.cache/paygate/go/bin/helm`` (where
scripts/with-test-services.sh installs it with ``go install``); ``helm`` on PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Final

import yaml

from tests.support.services import service_missing

BIN_ENV: Final = "HELM_BIN"
CACHED: Final = Path.home() / ".cache" / "paygate" / "go" / "bin" / "helm"
CHART: Final = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "paygate"


def helm() -> str:
    given = os.environ.get(BIN_ENV)
    for candidate in (given, str(CACHED) if CACHED.exists() else None, shutil.which("helm")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    service_missing("helm is not installed (scripts/with-test-services.sh go-installs it)")
    raise AssertionError("unreachable")


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm(), *args], capture_output=True, text=True, timeout=120, check=False)


def render(*sets: str, values: tuple[Path, ...] = ()) -> list[dict[str, Any]]:
    """``helm template`` of the chart with ``values`` files then ``--set`` values; the
    objects it renders."""
    arguments = ["template", "rel", str(CHART)]
    for file in values:
        arguments += ["--values", str(file)]
    for value in sets:
        arguments += ["--set", value]
    done = run_helm(*arguments)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]
