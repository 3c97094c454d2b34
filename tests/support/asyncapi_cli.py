"""The AsyncAPI CLI (``@asyncapi/cli`` from npm) for the tests: where it is, and a run of it.

First found wins: ``ASYNCAPI_BIN``; ``~/.cache/paygate/npm/node_modules/.bin/asyncapi``
(where scripts/with-test-services.sh installs it with npm); ``asyncapi`` on PATH. Missing:
skipped, or failed under CI=true.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Final

from tests.support.services import service_missing

BIN_ENV: Final = "ASYNCAPI_BIN"
CACHED: Final = Path.home() / ".cache" / "paygate" / "npm" / "node_modules" / ".bin" / "asyncapi"


def asyncapi() -> str:
    given = os.environ.get(BIN_ENV)
    for candidate in (given, str(CACHED) if CACHED.exists() else None, shutil.which("asyncapi")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    service_missing("the AsyncAPI CLI is not installed (scripts/with-test-services.sh installs it)")
    raise AssertionError("unreachable")


def validate(document: Path, work_dir: Path) -> subprocess.CompletedProcess[str]:
    """``asyncapi validate document``, with the CLI's usage analytics off: its config file
    (normally in the home directory) is one of our own, so nothing is sent anywhere."""
    settings = work_dir / "asyncapi-analytics.json"
    settings.write_text(
        json.dumps({"analyticsEnabled": "false", "infoMessageShown": "true", "userID": "-"})
    )
    env = {**os.environ, "ASYNCAPI_METRICS_CONFIG_PATH": str(settings)}
    return subprocess.run(
        [asyncapi(), "validate", str(document)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
        cwd=work_dir,
    )
