"""The README's curl session, run as written against ``paygate dev``, so it cannot drift.

Every ``$ curl ...`` line of the README's console block runs in a shell (the real curl), in
the directory ``paygate dev`` runs in (its ``.cache/`` paths are the README's), with the
facade's and the sandbox's real URLs for ``127.0.0.1:8443`` and ``:8081``. The README's ids
are examples: each one is mapped to the id the service answered where it first appears,
and replaced in the commands that follow. Then every ``"key": value`` the README shows
(value written out in full, not a time, a secret or a count that depends on timing) must
be what the service answered, at the first place that key occurs.

Where the README says a later step finishes a payment (a capture, a void, the 3-D Secure
payer, the reconciler's next pass), a GET is asked again, a bounded number of times, until
it answers what the README shows.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import environment_of, start_service
from tests.support.stack import isolated_settings

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"
FACADE = "https://127.0.0.1:8443"
SANDBOX = "http://127.0.0.1:8081"
# Example ids: full (pay_<32 hex>) or shortened with "..." (pay_9a0e...); an Alipay
# out_trade_no is a payment id with its attempt (-a1). `ref_`, `we_` and the like alike.
ID = re.compile(
    r"\b(?:pay|ref|we|whd|evt|ch|re)_[0-9a-f]+(?:\.\.\.)?(?:-a\d+)?"
    r"|\b20\d{10,}[0-9a-f]+"  # an Alipay trade number
)
# Values that differ on every run or with timing: never compared.
VOLATILE = {
    "createdAt",
    "updatedAt",
    "expiresAt",
    "nextAttemptAt",
    "lastAttemptAt",
    "secret",
    "attempts",
    "lastError",
}
POLLS = 150  # a GET asked again at most this often (0.2 s apart) until it matches


@dataclass
class Step:
    command: str
    expected: str


def session_steps() -> list[Step]:
    text = README.read_text()
    start = text.index("## A curl session")
    block = text[text.index("```console\n", start) + len("```console\n") :]
    block = block[: block.index("```")]
    steps: list[Step] = []
    lines = iter(block.splitlines())
    pending: list[str] = []
    for line in lines:
        if line.startswith("$ "):
            command = [line[2:]]
            # A line ends with a backslash, or inside a quoted JSON body, to go on.
            while not line[2:].startswith("#") and (
                command[-1].endswith("\\") or "\n".join(command).count("'") % 2
            ):
                command.append(next(lines))
            steps.append(Step("\n".join(command), ""))
            pending = []
        elif line.strip() and steps:
            pending.append(line)
            steps[-1].expected = "\n".join(pending)
    return steps


TOKEN = re.compile(
    r'"(?P<open>\w+)": [{\[]|(?P<item>\{)|(?P<close>[}\]])'
    r'|"(?P<key>\w+)": (?P<value>"(?:[^"\\]|\\.)*"|null|true|false|-?\d+(?:\.\d+)?)'
)


def shown_pairs(expected: str) -> Iterator[tuple[list[str | int], str, str]]:
    """``(path, key, literal)`` of every ``"key": literal`` the README shows, with the path
    to the object around it: keys, and the index of an item in a list."""
    frames: list[tuple[str, str | int]] = []  # ("key", name), ("list", last index), ("item", i)
    for token in TOKEN.finditer(expected):
        if token.group("open"):
            frames.append(("key", token.group("open")))
            if token.group(0).endswith("["):
                frames.append(("list", -1))
        elif token.group("item"):
            if frames and frames[-1][0] == "list":
                index = int(frames[-1][1]) + 1
                frames[-1] = ("list", index)
                frames.append(("item", index))
            else:
                frames.append(("object", 0))
        elif token.group("close"):
            if frames:
                frames.pop()
            if token.group("close") == "]" and frames and frames[-1][0] == "key":
                frames.pop()
        else:
            path = [value for kind, value in frames if kind in ("key", "item")]
            yield path, token.group("key"), token.group("value")


def at(answer: Any, path: list[str | int], key: str) -> Any:
    """The value at ``path`` + ``key`` in ``answer``, or ``_MISSING``."""
    current = answer
    for step in [*path, key]:
        if isinstance(step, int):
            if not isinstance(current, list) or step >= len(current):
                return _MISSING
        elif not isinstance(current, dict) or step not in current:
            return _MISSING
        current = current[step]
    return current


class Session:
    def __init__(self, cwd: Path, facade: str, sandbox: str) -> None:
        self.cwd = cwd
        self.ids: dict[str, str] = {}
        self.urls = {FACADE: facade, SANDBOX: sandbox}
        self.env = {**os.environ}

    def substitute(self, text: str) -> str:
        for readme, real in self.urls.items():
            text = text.replace(readme, real)
        # Longest first: a full id must not be half-replaced by a shorter one it starts with.
        for readme in sorted(self.ids, key=len, reverse=True):
            text = text.replace(readme, self.ids[readme])
        return text

    def run(self, step: Step) -> None:
        if step.command.startswith("#"):
            return
        if step.command.startswith("export PAYGATE_API_KEY="):
            key_file = self.cwd / ".cache" / "dev-api-key"
            self.env["PAYGATE_API_KEY"] = key_file.read_text().strip()
            return
        command = self.substitute(step.command)
        assert command.startswith("curl "), f"the session runs curl only: {command}"
        polls = POLLS if _is_get(command) else 1
        mismatch = self._compare(step, self._curl(command))
        for _ in range(polls - 1):
            if mismatch is None:
                return
            time.sleep(0.2)  # a bounded poll: the README's "later" (a capture, a void, a pass)
            mismatch = self._compare(step, self._curl(command))
        if mismatch is not None:
            readme, service = mismatch
            raise AssertionError(f"{step.command}\nREADME: {readme}\nservice: {service}")

    def _curl(self, command: str) -> Any:
        done = subprocess.run(
            # The options go first: a README line may end with a comment.
            ["bash", "-c", command.replace("curl ", "curl --silent --show-error ", 1)],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"{command}\n{done.stderr}"
        return json.loads(done.stdout) if done.stdout.strip() else None

    def _compare(self, step: Step, answer: Any) -> tuple[str, str] | None:
        """None if ``answer`` shows what the README does; else the two sides that differ."""
        for path, key, literal in shown_pairs(step.expected):
            actual = at(answer, path, key)
            if "..." in literal:
                if isinstance(actual, str):
                    self._learn_ids(json.loads(literal), actual)
                continue
            if key in VOLATILE:
                continue
            expected = json.loads(literal)
            if isinstance(expected, str) and isinstance(actual, str):
                self._learn_ids(expected, actual)
                expected = self.substitute(expected)
            if actual != expected:
                where = ".".join(str(step) for step in [*path, key])
                shown = "(missing)" if actual is _MISSING else json.dumps(actual)
                return f"{where}: {json.dumps(expected)}", f"{where}: {shown}\n{answer}"
        return None

    def _learn_ids(self, readme: str, real: str) -> None:
        """Map the README's example ids in ``readme`` to the ids at the same place in
        ``real`` (the text around them must match: a URL's prefix, a trade's suffix)."""
        for match in ID.finditer(readme):
            token = match.group(0)
            if token in self.ids:
                continue
            prefix = self.substitute(readme[: match.start()])
            if not real.startswith(prefix):
                continue
            rest = real[len(prefix) :]
            found = re.match(r"[\w.-]+", rest)
            if found is None:
                continue
            value = found.group(0)
            suffix = token.rsplit("...", 1)[1] if "..." in token else ""
            if suffix and value.endswith(suffix):
                self.ids[token.removesuffix(suffix)] = value.removesuffix(suffix)
            self.ids[token] = value


_MISSING = object()


def _is_get(command: str) -> bool:
    return " -d " not in command and "-X POST" not in command


def test_the_readme_curl_session_is_what_the_service_answers(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    steps = session_steps()
    assert sum(s.command.startswith("curl ") for s in steps) >= 20, "the session was not found"
    settings = isolated_settings(
        kafka_bootstrap,
        tmp_path,
        f"sqlite+aiosqlite:///{tmp_path / 'paygate.db'}",
        "readme",
        tls_dir=tmp_path / ".cache" / "tls",
        # The README's 3-D Secure payment is finished by "the reconciler's next pass", which
        # asks about payments older than the minimum age: both short, to keep the test so.
        reconcile_interval_s=1,
        reconcile_min_age_s=6,
    )
    dev = start_service(
        "dev",
        ["dev"],
        env=environment_of(settings),
        log_dir=tmp_path,
        announce_prefix="PAYGATE_URL=",
        timeout_s=120,
        cwd=tmp_path,
    )
    try:
        assert dev.process.stdout is not None
        sandbox = dev.process.stdout.readline().strip().split("=", 1)[1]
        session = Session(tmp_path, dev.announced, sandbox)
        for step in steps:
            session.run(step)
    finally:
        dev.stop()
    assert dev.process.returncode == 0, dev.log()[-3000:]
