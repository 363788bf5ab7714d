"""What `bot check` reports: every problem with file, line, column and field path."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.flows.flowset import FlowSet

__all__ = ["CheckReport", "Problem", "Severity", "format_problem", "format_report"]


class Severity(StrEnum):
    """An error stops the flows from loading; a warning is shown and the flows still run."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    """One finding. `line`/`column` are 1-based; 0 when the problem concerns a whole file or
    folder (a missing directory). `path` is the field (`flows[0].steps[2].template`) or, for a
    template file, the template's name."""

    file: str
    line: int
    column: int
    path: str
    message: str
    severity: Severity = Severity.ERROR


def format_problem(p: Problem) -> str:
    """`file:line:col: error: path: message`, the shape editors and CI logs link to."""
    where = p.file if p.line == 0 else f"{p.file}:{p.line}:{p.column}"
    field = f" {p.path}:" if p.path else ""
    return f"{where}: {p.severity}:{field} {p.message}"


@dataclass(frozen=True, slots=True)
class CheckReport:
    """All problems, sorted by place; `flowset` is None when any of them is an error."""

    problems: tuple[Problem, ...]
    flowset: FlowSet | None
    flow_files: int = 0
    template_files: int = 0

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity is Severity.ERROR)

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity is Severity.WARNING)

    @property
    def ok(self) -> bool:
        return not self.errors


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def format_report(report: CheckReport) -> str:
    """Every problem on its own line, then a one-line summary."""
    lines = [format_problem(p) for p in report.problems]
    flows = len(report.flowset.flows) if report.flowset is not None else None
    summary = (
        f"{_plural(len(report.errors), 'error')}, {_plural(len(report.warnings), 'warning')} "
        f"in {_plural(report.flow_files, 'flow file')} and "
        f"{_plural(report.template_files, 'template')}"
    )
    if flows is not None:
        summary += f"; {_plural(flows, 'flow')} ready"
    lines.append(summary)
    return "\n".join(lines) + "\n"
