"""The frame of the verdict runs: exit codes, and which work directories are kept."""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.chaos.report import Verdict
from devtools.verdict_run import EXIT_ERROR, EXIT_INTERRUPTED, run_as_command, run_in_work_dir

pytestmark = pytest.mark.unit


@dataclass(frozen=True, slots=True)
class Options:
    work_dir: Path | None = None
    keep_work_dir: bool = False


def _verdict(passed: bool) -> Verdict:
    verdict = Verdict(rows=[("payments", "3", "3")])
    verdict.check([] if passed else ["pay-1"], "charged twice")
    return verdict


@pytest.mark.parametrize(
    ("passed", "keep", "code", "kept"),
    [(True, False, 0, False), (False, False, 1, True), (True, True, 0, True)],
    ids=["passed", "failed", "kept-on-request"],
)
async def test_a_temporary_work_dir_goes_only_after_a_run_that_passed(
    passed: bool,
    keep: bool,
    code: int,
    kept: bool,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # kept ones go with tmp_path
    used: list[Path] = []

    async def run(work_dir: Path) -> Verdict:
        used.append(work_dir)
        (work_dir / "consumer.log").write_text("...")
        return _verdict(passed)

    assert await run_in_work_dir(Options(keep_work_dir=keep), "cmd", "t-", run) == code
    assert used[0].is_dir() is kept
    out = capsys.readouterr().out
    assert "command: cmd" in out
    assert f"options: work_dir=None keep_work_dir={keep}" in out
    assert ("logs kept in" in out) is kept
    assert "| payments | 3 | 3 |" in out  # the verdict's table
    assert ("result: PASS" in out) is passed


async def test_a_run_that_raises_keeps_its_logs_and_the_command_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    async def run(work_dir: Path) -> Verdict:
        raise RuntimeError("the broker did not start")

    async def command(command_line: str) -> int:
        return await run_in_work_dir(Options(), command_line, "t-", run)

    assert await run_as_command("chaos", command) == EXIT_ERROR
    captured = capsys.readouterr()
    assert "logs kept in" in captured.out
    assert "chaos run could not complete: the broker did not start" in captured.err


async def test_a_cancelled_run_exits_130() -> None:
    async def command(command_line: str) -> int:
        asyncio.current_task().cancel()  # type: ignore[union-attr]  # as SIGTERM does
        await asyncio.sleep(0)
        return 0

    assert await run_as_command("outage", command) == EXIT_INTERRUPTED
