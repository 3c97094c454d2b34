"""The pipeline bench's ``--baseline``: the child runs the same options once, and the two
summaries' figures are set side by side."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.bench.baseline import comparison_lines, figures, without_baseline
from devtools.bench.options import parse_options
from paygate.settings import EventLoop

pytestmark = pytest.mark.unit


def test_the_baseline_child_gets_the_same_options_without_baseline() -> None:
    argv = ["--cases", "a,b", "--baseline", "/tmp/old", "--payments", "500", "--baseline=/x"]
    assert without_baseline(argv) == ["--cases", "a,b", "--payments", "500"]
    assert parse_options(argv[:4]).baseline == Path("/tmp/old")
    assert parse_options([]).baseline is None


def test_the_baseline_can_run_on_another_event_loop() -> None:
    argv = ["--event-loop", "uvloop", "--baseline", ".", "--baseline-event-loop", "asyncio"]
    options = parse_options(argv)
    assert (options.event_loop, options.baseline_event_loop) == (
        EventLoop.UVLOOP,
        EventLoop.ASYNCIO,
    )
    # The child is told its loop after the shared options, so its own value wins.
    assert without_baseline([*argv, "--baseline-event-loop=uvloop"]) == ["--event-loop", "uvloop"]
    with pytest.raises(SystemExit):
        parse_options(["--baseline-event-loop", "asyncio"])


def test_summaries_are_compared_figure_by_figure() -> None:
    before = figures(["rate b: 664.5 payments/s", "cpu b: 1436 us per payment", "ratio b/a: 1"])
    after = figures(["rate b: 700.0 payments/s", "cpu b: 1292 us per payment", "cpu a: 37 us"])
    assert before == {("rate", "b"): 664.5, ("cpu", "b"): 1436.0}
    assert comparison_lines(before, after) == [
        "",
        "baseline beside this run (this / baseline)",
        "  cpu b: 1436 -> 1292 us per payment (0.900)",
        "  rate b: 664.5 -> 700 payments/s (1.053)",
    ]
