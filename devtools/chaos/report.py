"""The verdict of a chaos run: the table of figures, the violated checks, the notes.

Filled by :mod:`devtools.chaos.verdict` (payments) and :mod:`devtools.chaos.refund_verdict`
(refunds); printed as the run's result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

SHOWN_IDS = 20


@dataclass(frozen=True, slots=True)
class Violation:
    check: str
    ids: list[str]

    def render(self) -> str:
        shown = ", ".join(self.ids[:SHOWN_IDS])
        more = f" (and {len(self.ids) - SHOWN_IDS} more)" if len(self.ids) > SHOWN_IDS else ""
        return f"- {self.check}: {len(self.ids)}: {shown}{more}"


@dataclass
class Verdict:
    rows: list[tuple[str, str, str]] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.violations

    def check(self, failed_ids: Sequence[str], what: str) -> None:
        if failed_ids:
            self.violations.append(Violation(what, sorted(failed_ids)))

    def render(self) -> str:
        lines = ["| figure | value | required |", "| --- | --- | --- |"]
        lines += [f"| {figure} | {value} | {required} |" for figure, value, required in self.rows]
        lines.append("")
        if self.passed:
            lines.append("result: PASS (no violations)")
        else:
            lines.append(f"result: FAIL ({len(self.violations)} violated checks)")
            lines += [violation.render() for violation in self.violations]
        if self.notes:
            lines += ["", "notes:", *self.notes]
        return "\n".join(lines)
