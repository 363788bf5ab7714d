"""Read a flows folder and a templates folder, check everything at once, and build the
FlowSet; `bot check` prints the same report (issue 3, item 6).

This is the I/O edge of the flows package: everything after it is pure.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from bot.boundedyaml import FLOW_LIMITS, YamlLimitError, read_text
from bot.errors import ConfigError
from bot.flows.checks import check_flows
from bot.flows.flowset import FlowSet
from bot.flows.model import Flow
from bot.flows.problems import CheckReport, Problem, Severity, format_report
from bot.flows.readers import Ctx
from bot.flows.template_checks import check_templates
from bot.flows.validate import read_file
from bot.flows.yamlpos import Located, YamlSyntaxError, load_located
from bot.policy import PolicyProfile, default_profile
from bot.rootfiles import Listing, files_under
from bot.templates import TemplateSet

__all__ = ["FlowError", "check_all", "check_command", "load_flowset"]

FLOW_SUFFIXES = (".yaml", ".yml")


class FlowError(ConfigError):
    """The flows or templates have errors; the message lists them as `bot check` does.
    Fix them (run `bot check`) and reload; the previous flows keep running meanwhile."""

    def __init__(self, report: CheckReport) -> None:
        self.report = report
        super().__init__(format_report(report).rstrip())


def _flow_files(flows_dir: Path) -> Listing:
    return files_under(flows_dir, "the flows folder", lambda name: name.endswith(FLOW_SUFFIXES))


def _read_flows(
    flows_dir: Path,
) -> tuple[list[Flow], dict[str, Located], list[Problem], int]:
    problems: list[Problem] = []
    flows: list[Flow] = []
    locs: dict[str, Located] = {}
    if not flows_dir.is_dir():
        msg = "no such folder (flows_dir in the settings names it)"
        return [], {}, [Problem(str(flows_dir), 0, 0, "", msg)], 0
    listing = _flow_files(flows_dir)
    problems.extend(Problem(str(r.path), 0, 0, "", r.reason) for r in listing.refused)
    for found in listing.files:
        name = str(found.path)
        try:
            text = read_text(found.real, FLOW_LIMITS)
        except YamlLimitError as exc:
            problems.append(Problem(name, exc.line, exc.column, "", exc.message))
            continue
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            problems.append(Problem(name, 0, 0, "", f"cannot read: {reason}"))
            continue
        try:
            located = load_located(text)
        except YamlSyntaxError as exc:
            problems.append(Problem(name, exc.pos.line, exc.pos.column, "", exc.message))
            continue
        locs[name] = located
        ctx = Ctx(name, located)
        flows.extend(read_file(ctx))
        problems.extend(ctx.problems)
    return flows, locs, problems, len(listing.files) + len(listing.refused)


def check_all(
    flows_dir: Path | str,
    templates_dir: Path | str,
    profile: PolicyProfile | None = None,
) -> CheckReport:
    """Every problem in every flow and template, sorted by place; with no errors, the
    FlowSet ready to run (warnings don't stop it)."""
    profile = profile or default_profile()
    flows, locs, problems, n_files = _read_flows(Path(flows_dir))
    tdir = Path(templates_dir)
    templates, unreadable = TemplateSet.from_dir(tdir)
    if not tdir.is_dir():
        msg = "no such folder (templates_dir in the settings names it)"
        problems.append(Problem(str(tdir), 0, 0, "", msg))
    problems.extend(check_flows(flows, locs, profile))
    problems.extend(check_templates(templates, unreadable, str(tdir), flows, locs, profile))
    ordered = tuple(sorted(set(problems), key=lambda p: (p.file, p.line, p.column, p.message)))
    has_errors = any(p.severity is Severity.ERROR for p in ordered)
    flowset = None if has_errors else FlowSet.build(flows, templates, profile)
    n_templates = len(templates.names) + len(unreadable)
    return CheckReport(ordered, flowset, n_files, n_templates)


def load_flowset(
    flows_dir: Path | str, templates_dir: Path | str, profile: PolicyProfile | None = None
) -> FlowSet:
    """The FlowSet, or `FlowError` listing every error (for start-up and hot reload)."""
    report = check_all(flows_dir, templates_dir, profile)
    if report.flowset is None:
        raise FlowError(report)
    return report.flowset


def check_command(
    flows_dir: Path | str,
    templates_dir: Path | str,
    profile: PolicyProfile | None,
    out: TextIO,
) -> int:
    """`bot check`: print every problem and a summary; exit status 0 when there are no
    errors (warnings allowed), 1 otherwise."""
    report = check_all(flows_dir, templates_dir, profile)
    out.write(format_report(report))
    return 0 if report.ok else 1
