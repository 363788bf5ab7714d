"""The report of a run: the expectations checked against the timeline, the summary, and the
two outputs of `bot simulate` (the text timeline and --json)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bot.policy import format_duration
from bot.simulate.scenario import Expectation, Scenario
from bot.simulate.timeline import TimelineLine

__all__ = [
    "ExpectationResult",
    "Report",
    "check_expectations",
    "format_line",
    "format_report",
]


@dataclass(frozen=True, slots=True)
class ExpectationResult:
    expectation: Expectation
    found: int
    held: bool

    def describe(self) -> str:
        e = self.expectation
        want = "at least 1" if e.count is None else str(e.count)
        return f"line {e.line}: {e.kind} {e.source}: wanted {want}, found {self.found}"


@dataclass(frozen=True, slots=True)
class Report:
    scenario: Scenario
    lines: tuple[TimelineLine, ...]
    expectations: tuple[ExpectationResult, ...]
    wall_seconds: float = 0.0

    @property
    def refused(self) -> int:
        return sum(1 for line in self.lines if line.kind == "refused")

    @property
    def ok(self) -> bool:
        return self.refused == 0 and all(r.held for r in self.expectations)

    @property
    def exit_status(self) -> int:
        return 0 if self.ok else 1

    def of_kind(self, kind: str) -> list[TimelineLine]:
        return [line for line in self.lines if line.kind == kind]

    def summary(self) -> dict[str, Any]:
        kinds = Counter(line.kind for line in self.lines)
        return {
            "actions": kinds["action"],
            "sent": kinds["sent"],
            "sent_by_basis": dict(Counter(x.what for x in self.lines if x.kind == "sent")),
            "dropped": kinds["dropped"],
            "dropped_by_reason": dict(Counter(x.what for x in self.lines if x.kind == "dropped")),
            "refused_by_meta": kinds["refused"],
            "expectations": len(self.expectations),
            "expectations_held": sum(1 for r in self.expectations if r.held),
            "virtual_days": round(
                (self.scenario.end - self.scenario.start) / timedelta(days=1), 2
            ),
            "wall_seconds": round(self.wall_seconds, 3),
        }

    def to_json(self) -> dict[str, Any]:
        s = self.scenario
        return {
            "scenario": str(s.path),
            "start": s.start.isoformat(),
            "end": s.end.isoformat(),
            "timeline": [_line_json(s.start, line) for line in self.lines],
            "expectations": [
                {
                    "line": r.expectation.line,
                    "kind": r.expectation.kind,
                    "expect": r.expectation.source,
                    "found": r.found,
                    "held": r.held,
                }
                for r in self.expectations
            ],
            "summary": self.summary(),
            "ok": self.ok,
            "exit_status": self.exit_status,
        }


def _line_json(start: datetime, line: TimelineLine) -> dict[str, Any]:
    return {
        "at": line.at.isoformat(),
        "offset": format_duration(line.at - start),
        "kind": line.kind,
        "account": line.account,
        "user": line.user,
        "what": line.what,
        "text": line.text,
        **line.fields,
    }


def _offset(start: datetime, at: datetime) -> str:
    return "+" + format_duration(at - start)


_LABELS = {"sent": "bot sent", "dropped": "bot dropped", "refused": "META REFUSED"}


def format_line(start: datetime, line: TimelineLine) -> str:
    """`Mon 2026-03-02 11:00:00 +0s  instagram  alice  bot sent  private_reply  "Hi..."`."""
    stamp = f"{line.at:%a %Y-%m-%d %H:%M:%S} {_offset(start, line.at):<11}"
    who = line.user or "-"
    label = line.what if line.kind == "action" else _LABELS.get(line.kind, line.kind)
    head = f"{stamp} {line.account:<10.10} {who:<10.10} {label:<12}"
    if line.kind in ("action", "note"):
        return f"{head} {line.text}".rstrip()
    if line.kind == "dropped":
        outcome = line.fields.get("outcome", "dropped")
        reason = line.what if outcome == "dropped" else f"{outcome}: {line.what}"
        source = line.fields.get("source")
        return f"{head} {f'{source} ' if source else ''}{reason}: {line.text}"
    if line.kind == "refused":
        code, sub = line.fields.get("code"), line.fields.get("subcode")
        err = f"(#{code}/{sub})" if sub else f"(#{code})"
        return f'{head} {line.what} {err}: {line.fields.get("detail", "")} "{line.text}"'
    return f'{head} {line.what:<21} "{line.text}"'


def format_report(report: Report, *, summary_only: bool = False) -> str:
    s = report.scenario
    out: list[str] = []
    if not summary_only:
        out.append(f"# {s.path}: {s.start:%a %Y-%m-%d %H:%M} to {s.end:%a %Y-%m-%d %H:%M} UTC")
        if s.description:
            out.append(f"# {' '.join(s.description.split())}")
        out.extend(format_line(s.start, line) for line in report.lines)
    failed = [r for r in report.expectations if not r.held]
    for r in failed:
        out.append(f"EXPECTATION FAILED {r.describe()}")
    sm = report.summary()
    bases = ", ".join(f"{k} {v}" for k, v in sorted(sm["sent_by_basis"].items()))
    held = f"; expectations {sm['expectations_held']}/{sm['expectations']} held"
    out.append(
        f"{sm['actions']} actions, {sm['sent']} sent ({bases or 'none'}), "
        f"{sm['dropped']} dropped, {sm['refused_by_meta']} refused by Meta"
        f"{held if report.expectations else ''}; "
        f"{sm['virtual_days']} virtual days in {sm['wall_seconds']:.2f} s"
    )
    if report.refused:
        out.append(
            "Meta (the simulator) refused sends the bot's policy allowed: a policy bug "
            "(or a policy profile looser than Meta's rules)."
        )
    return "\n".join(out) + "\n"


def check_expectations(
    expectations: Sequence[Expectation], lines: Sequence[TimelineLine]
) -> tuple[ExpectationResult, ...]:
    results = []
    for e in expectations:
        if e.kind == "refused_by_meta":
            found = sum(1 for line in lines if line.kind == "refused")
            results.append(ExpectationResult(e, found, found == e.count))
            continue
        found = sum(1 for line in lines if line.kind == e.kind and _matches(e, line))
        held = found >= 1 if e.count is None else found == e.count
        results.append(ExpectationResult(e, found, held))
    return tuple(results)


def _matches(e: Expectation, line: TimelineLine) -> bool:
    if e.at is not None and not e.at <= line.at <= e.at + e.within:
        return False
    f = e.filters
    checks = {
        "to": line.user,
        "basis": line.what,
        "reason": line.what,
        "kind": line.fields.get("send_kind"),
        "outcome": line.fields.get("outcome"),
        "account": line.account,
    }
    for key, want in f.items():
        if key == "text":
            if want.casefold() not in str(line.fields.get("message_text", line.text)).casefold():
                return False
        elif key == "account":
            if want not in (
                line.account,
                line.fields.get("account_id"),
                line.fields.get("platform"),
            ):
                return False
        elif checks.get(key) != want:
            return False
    return True
