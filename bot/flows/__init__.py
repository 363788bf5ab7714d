"""Flows: creators' YAML (triggers, steps, guards) and the pure runtime that runs them.

`check_all` / `load_flowset` read and check the flows and templates folders (the only I/O);
`FlowSet.match` picks the one flow an event starts; `start`, `on_event` and `on_due` move a
conversation and return effects for the engine (docs/flows.md).
"""

from __future__ import annotations

from pathlib import Path

from bot.flows.effects import (
    Effect,
    Handoff,
    RenderFailed,
    Schedule,
    Send,
    SendKind,
    SetField,
    Tag,
)
from bot.flows.flowset import FlowSet
from bot.flows.loader import FlowError, check_all, check_command, load_flowset
from bot.flows.match import Candidate, MatchIndex, keyword_matches
from bot.flows.model import Flow, MatchMode, Step, StepType, Trigger, TriggerType
from bot.flows.normalize import fold, words
from bot.flows.problems import CheckReport, Problem, Severity, format_problem, format_report
from bot.flows.run import ContactView, GuardHistory, Outcome, RunState, Waiting
from bot.flows.runtime import blocked_by, explain_start, on_due, on_event, start

SCHEMA_FILE = Path(__file__).with_name("flow.schema.json")

__all__ = [
    "SCHEMA_FILE",
    "Candidate",
    "CheckReport",
    "ContactView",
    "Effect",
    "Flow",
    "FlowError",
    "FlowSet",
    "GuardHistory",
    "Handoff",
    "MatchIndex",
    "MatchMode",
    "Outcome",
    "Problem",
    "RenderFailed",
    "RunState",
    "Schedule",
    "Send",
    "SendKind",
    "SetField",
    "Severity",
    "Step",
    "StepType",
    "Tag",
    "Trigger",
    "TriggerType",
    "Waiting",
    "blocked_by",
    "check_all",
    "check_command",
    "explain_start",
    "fold",
    "format_problem",
    "format_report",
    "keyword_matches",
    "load_flowset",
    "on_due",
    "on_event",
    "start",
    "words",
]
