"""``python -m devtools.bench hops``: the hop arithmetic, the percentiles, the table and the
options, as pure functions (the end-to-end run is tests/integration/test_bench_hops_smoke.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from devtools.bench.hop_options import parse_hop_options
from devtools.bench.hop_report import HEADER, comparison_lines, hop_row, percentile, table_lines
from devtools.bench.hop_timeline import HOPS, TOTAL, Timeline, hop_samples, timelines

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
T0 = 1_765_000_000.0
# Epoch seconds as floats resolve about 0.24 us today: milliseconds compare to 1 us.
MS = 1e-3
ROW = re.compile(
    r"^\| ([a-z ]+) \| (\d+) \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \| .+ \|$"
)


def _timeline(*gaps_ms: float, start: float = T0) -> Timeline:
    marks = [start]
    for gap in gaps_ms:
        marks.append(marks[-1] + gap / 1000)
    return Timeline(*marks)


def test_the_hops_are_the_gaps_between_the_marks_in_order_and_add_up_to_the_total() -> None:
    timeline = _timeline(3.0, 12.0, 1.5, 7.25, 4.0)

    hops_ms = [hop * 1000 for hop in timeline.hops_s()]

    assert hops_ms == pytest.approx([3.0, 12.0, 1.5, 7.25, 4.0], abs=MS)
    assert sum(timeline.hops_s()) == pytest.approx(timeline.total_s())
    assert timeline.total_s() * 1000 == pytest.approx(27.75, abs=MS)


def test_a_hop_is_never_clamped_so_a_mark_out_of_order_shows() -> None:
    # A result record stamped in the millisecond before the outcome's microsecond stamp:
    # the Kafka mark is truncated, and the hop reads short, below zero, as it is.
    timeline = _timeline(3.0, 12.0, 1.5, -0.4, 4.0)

    assert timeline.hops_s()[3] * 1000 == pytest.approx(-0.4, abs=MS)
    assert sum(timeline.hops_s()) == pytest.approx(timeline.total_s())


def test_samples_are_per_hop_in_milliseconds_in_report_order_then_the_total() -> None:
    samples = hop_samples([_timeline(1, 2, 3, 4, 5), _timeline(10, 20, 30, 40, 50)])

    assert list(samples) == [name for name, _ in HOPS] + [TOTAL]
    assert [samples[name] for name, _ in HOPS] == [
        pytest.approx([1, 10], abs=MS),
        pytest.approx([2, 20], abs=MS),
        pytest.approx([3, 30], abs=MS),
        pytest.approx([4, 40], abs=MS),
        pytest.approx([5, 50], abs=MS),
    ]
    assert samples[TOTAL] == pytest.approx([15, 150], abs=MS)


def test_no_request_gives_every_hop_and_the_total_no_samples() -> None:
    samples = hop_samples([])

    assert samples == {**{name: [] for name, _ in HOPS}, TOTAL: []}


def test_a_request_is_timed_by_its_order_marks_and_one_without_every_mark_is_named() -> None:
    requests = [("o-1", T0, T0 + 0.05), ("o-2", T0 + 0.02, T0 + 0.09), ("o-3", T0, T0 + 1)]
    commands = {"o-1": T0 + 0.002, "o-2": T0 + 0.025, "o-3": T0 + 0.001}
    rows = {"o-1": (T0 + 0.010, T0 + 0.020), "o-2": (T0 + 0.04, T0 + 0.05)}
    results = {"o-1": T0 + 0.030, "o-2": T0 + 0.06, "o-3": T0 + 0.5}

    found, missing = timelines(requests, commands, rows, results)

    assert missing == ["o-3"]  # no row in the store
    assert list(found.items()) == [
        ("o-1", Timeline(T0, T0 + 0.002, T0 + 0.010, T0 + 0.020, T0 + 0.030, T0 + 0.05)),
        ("o-2", Timeline(T0 + 0.02, T0 + 0.025, T0 + 0.04, T0 + 0.05, T0 + 0.06, T0 + 0.09)),
    ]


def test_percentiles_are_nearest_rank_so_always_a_measured_value() -> None:
    hundred = [float(n) for n in range(100, 0, -1)]  # order does not matter

    assert [percentile(hundred, p) for p in (50, 90, 99, 100)] == [50.0, 90.0, 99.0, 100.0]
    assert [percentile([7.0], p) for p in (50, 99)] == [7.0, 7.0]
    assert percentile([1.0, 2.0, 3.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 99) == 4.0


@pytest.mark.parametrize("p", [0, -1, 100.5])
def test_a_percentile_outside_0_to_100_is_refused(p: float) -> None:
    with pytest.raises(ValueError, match="p must be"):
        percentile([1.0], p)


def test_no_samples_have_no_percentile() -> None:
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)


def test_a_row_has_n_the_percentiles_and_the_max() -> None:
    row = hop_row("relay", [4.0, 1.0, 3.0, 2.0])

    assert (row.name, row.n, row.p50_ms, row.p90_ms, row.p99_ms, row.max_ms) == (
        "relay",
        4,
        2.0,
        4.0,
        4.0,
        4.0,
    )


def test_the_table_has_the_header_then_a_row_per_hop_then_the_total() -> None:
    samples = hop_samples([_timeline(1, 2, 3, 4, 5), _timeline(1.5, 2, 3, 4, 5.5)])

    lines = table_lines(samples)

    assert lines[:2] == list(HEADER)
    rows = [ROW.match(line) for line in lines[2:]]
    assert all(rows), lines
    assert [m.group(1) for m in rows if m] == [name for name, _ in HOPS] + [TOTAL]
    assert lines[2] == (
        "| facade in | 2 | 1.0 | 1.5 | 1.5 | 1.5 | client send -> command record: HTTP, parse, "
        "order read, vaulting |"
    )
    assert lines[-1] == "| total | 2 | 15.0 | 16.0 | 16.0 | 16.0 | client send -> client answer |"


def test_a_hop_without_samples_is_a_row_of_dashes() -> None:
    lines = table_lines(hop_samples([]))

    assert lines[-1] == "| total | 0 | - | - | - | - | client send -> client answer |"


def test_the_comparison_sets_each_hops_p50_and_p99_beside_the_baselines() -> None:
    baseline = hop_samples([_timeline(2, 2, 2, 2, 2)])
    current = hop_samples([_timeline(1, 2, 3, 4, 0)])

    lines = comparison_lines(baseline, current, "this checkout")

    assert lines[1] == "this checkout beside the baseline: p50 and p99 in ms (this / baseline)"
    assert lines[2] == "  facade in: p50 2.0 -> 1.0 (0.50), p99 2.0 -> 1.0 (0.50)"
    assert lines[-2] == "  facade out: p50 2.0 -> 0.0 (0.00), p99 2.0 -> 0.0 (0.00)"
    assert lines[-1] == "  total: p50 10.0 -> 10.0 (1.00), p99 10.0 -> 10.0 (1.00)"


def test_the_options_default_to_fifty_a_second_five_hundred_requests_sqlite() -> None:
    options = parse_hop_options([])

    assert (options.rate_per_s, options.count, options.wait_s) == (50.0, 500, 10)
    assert options.warmup > 0
    assert options.database_url is None
    assert options.baseline is None


def test_the_options_take_a_rate_a_count_and_a_baseline_checkout() -> None:
    options = parse_hop_options(["--rate", "20", "--count", "20", "--baseline", str(REPO_ROOT)])

    assert (options.rate_per_s, options.count, options.baseline) == (20.0, 20, REPO_ROOT)


def test_a_baseline_that_is_no_paygate_checkout_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_hop_options(["--baseline", str(tmp_path)])

    assert exit_info.value.code == 2
