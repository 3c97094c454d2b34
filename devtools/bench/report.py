"""Rates, ratios and targets, printed as lines a person and a test can both read.

The lines ``rate X: <n> payments/s``, ``ratio b/a: <n>``, ``ratio c/bound: <n>``,
``ratio b/b-normal: <n>`` and ``ratio b-tokens/b: <n>`` keep this exact shape:
``tests/integration/test_bench_smoke.py`` and readers' scripts parse them.

Beside each rate, the CPU the bench process spent per payment (all its threads, from the
clock's start to its stop): on a shared, loaded machine the wall-clock rates move with the
neighbours' load, while CPU per payment moves far less, so ``ratio b/a by CPU`` (a's CPU
per payment over b's) is the steadier reading of what the pipeline costs against the bare
loop. It is what b/a would be on otherwise idle cores, both being CPU-bound.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# Case b again, on SQLite with synchronous=NORMAL (--compare-sqlite-synchronous).
B_NORMAL = "b-normal"
# Case b again, its commands naming accounts by vault token (--compare-tokens).
B_TOKENS = "b-tokens"

# The targets of the issue the benchmark was written for.
TARGET_B_OVER_A = 0.5
TARGET_C_RATE = 2000.0


@dataclass(frozen=True, slots=True)
class CaseResult:
    case: str
    title: str
    payments: int
    elapsed_s: float
    details: tuple[str, ...] = ()
    # CPU seconds of the bench process (all threads) over the timed span; None: not taken.
    cpu_s: float | None = None

    @property
    def rate(self) -> float:
        return self.payments / self.elapsed_s

    @property
    def cpu_us_per_payment(self) -> float | None:
        return None if self.cpu_s is None else self.cpu_s / self.payments * 1e6


@dataclass(frozen=True, slots=True)
class ConcurrencyBound:
    """The most case c can do: ``in_flight`` provider calls of ``delay_s`` at a time."""

    in_flight: int
    delay_s: float
    reason: str

    @property
    def rate(self) -> float:
        return self.in_flight / self.delay_s


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def case_lines(result: CaseResult) -> list[str]:
    return [
        f"case {result.case}: {result.title}",
        f"  {result.payments} payments in {result.elapsed_s:.3f} s = {result.rate:.1f} payments/s",
        *(
            [
                f"  CPU of the bench process {result.cpu_s:.3f} s = "
                f"{result.cpu_us_per_payment:.0f} us per payment "
                f"({result.cpu_s / result.elapsed_s:.2f} cores busy on average)"
            ]
            if result.cpu_s is not None and result.cpu_us_per_payment is not None
            else []
        ),
        *(f"  {detail}" for detail in result.details),
    ]


def summary_lines(results: Mapping[str, CaseResult], bound: ConcurrencyBound | None) -> list[str]:
    a, b, c = results.get("a"), results.get("b"), results.get("c")
    b_normal, b_tokens = results.get(B_NORMAL), results.get(B_TOKENS)
    lines = ["", "summary"]
    lines += [
        f"rate {r.case}: {r.rate:.1f} payments/s"
        for r in (a, b, b_normal, b_tokens, c)
        if r is not None
    ]
    lines += [
        f"cpu {r.case}: {r.cpu_us_per_payment:.0f} us per payment"
        for r in (a, b, b_normal, c)
        if r is not None and r.cpu_us_per_payment is not None
    ]
    if a is not None and b is not None:
        ratio = b.rate / a.rate
        lines.append(f"ratio b/a: {ratio:.4f}")
        if a.cpu_us_per_payment and b.cpu_us_per_payment:
            lines.append(f"ratio b/a by CPU: {a.cpu_us_per_payment / b.cpu_us_per_payment:.4f}")
    else:
        ratio = None
        lines.append("ratio b/a: n/a (needs cases a and b)")
    if c is not None and bound is not None:
        lines.append(
            f"concurrency bound of c: {bound.in_flight} in flight / {bound.delay_s:g} s = "
            f"{bound.rate:.1f} payments/s ({bound.reason})"
        )
        lines.append(f"ratio c/bound: {c.rate / bound.rate:.4f}")
    if b is not None and b_normal is not None:
        # FULL's rate over NORMAL's: the share of throughput that durability keeps.
        lines.append(f"ratio b/b-normal: {b.rate / b_normal.rate:.4f}")
    if b is not None and b_tokens is not None:
        # Tokens' rate over clear numbers': what looking up and decrypting costs.
        lines.append(f"ratio b-tokens/b: {b_tokens.rate / b.rate:.4f}")
    lines += ["", "targets (from the issue; reported, never asserted)"]
    if ratio is not None:
        lines.append(
            f"  b/a >= {TARGET_B_OVER_A:g}: {_met(ratio >= TARGET_B_OVER_A)} (measured {ratio:.4f})"
        )
    else:
        lines.append(f"  b/a >= {TARGET_B_OVER_A:g}: not measured")
    if c is not None:
        lines.append(
            f"  c >= {TARGET_C_RATE:g} payments/s: {_met(c.rate >= TARGET_C_RATE)} "
            f"(measured {c.rate:.1f} payments/s)"
        )
    else:
        lines.append(f"  c >= {TARGET_C_RATE:g} payments/s: not measured")
    return lines
