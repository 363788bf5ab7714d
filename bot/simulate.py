"""`bot simulate SCENARIO.yaml`: the real daemon against a scripted timeline on a virtual clock.

The bot's own app (webhook -> inbox -> engine -> outbox -> sender) and the Graph API simulator
run on loopback, as in the tests' `make_stack`, on one `VirtualClock` that jumps from one due
time to the next, so thirty days pass in seconds. The simulator is the referee: it applies
Meta's rules on its own (POLICY.md), so a send it refuses is a policy bug and the exit status
says so. The scenario format is in docs/simulate.md.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import aiohttp
import yaml
from aiohttp import web

from bot.clock import SystemClock, VirtualClock, from_ms, to_ms
from bot.config import Config, config_from_mapping
from bot.errors import ConfigError
from bot.events import OptInKind, Platform
from bot.policy import (
    HUMAN_AGENT_TAG,
    Author,
    Content,
    Intent,
    PolicyProfile,
    ProfileError,
    Refused,
    decide,
    format_duration,
    load_profile,
    parse_duration,
    profile_from_mapping,
    set_handoff,
)
from bot.simulator import Delivered, LogEntry, Simulator, SimulatorError, create_simulator_app
from bot.simulator.payloads import encode, sign
from bot.store.conversations import load_state, save_state
from bot.store.outbox import Outcome, SendKind, enqueue, log_send

if TYPE_CHECKING:
    from bot.app import Runtime

__all__ = [
    "Action",
    "Expectation",
    "Report",
    "Scenario",
    "ScenarioAccount",
    "ScenarioError",
    "TimelineLine",
    "add_simulate_parser",
    "format_report",
    "load_scenario",
    "parse_scenario",
    "run_scenario",
    "simulate_command",
]

DEFAULT_START = datetime(2026, 3, 2, 11, 0, tzinfo=UTC)
DEFAULT_UNTIL = timedelta(days=7)
APP_SECRET = "simulate-app-secret"  # not a secret: both ends run in this process
DEFAULT_ACCOUNTS = (
    ("17841400000000001", Platform.INSTAGRAM, "sandbox_creator"),
    ("100000000000001", Platform.MESSENGER, "Sandbox Page"),
)
# Meta batches up to 1000 changes per webhook POST (POLICY.md §2); so does the runner.
MAX_ENTRIES_PER_POST = 1000
TEXT_EXCERPT = 60
_NOT_SCHEDULED = " not scheduled: "  # the engine's note for a follow-up no basis could carry

YamlPath = tuple[str | int, ...]


class ScenarioError(ConfigError):
    """The scenario file is wrong (or asks the simulator for something impossible); the message
    starts with file:line:column and names the key to fix."""


# --- the scenario -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScenarioAccount:
    id: str
    platform: Platform
    name: str

    @property
    def label(self) -> str:
        return self.name or self.platform.value


@dataclass(frozen=True, slots=True)
class Action:
    """One timeline entry (one repetition of it): who does what, when, written where."""

    at: datetime
    name: str
    account: ScenarioAccount
    user: str | None
    args: Mapping[str, str]
    line: int
    where: str  # `timeline[3]`, for messages


@dataclass(frozen=True, slots=True)
class Expectation:
    """An `expect:` entry: some lines of the timeline must (or, with count: 0, must not) be."""

    kind: str  # sent | dropped | refused_by_meta
    line: int
    source: str  # the entry as written, for the report
    at: datetime | None = None
    within: timedelta = timedelta(0)
    filters: Mapping[str, str] = field(default_factory=dict)
    count: int | None = None  # None: at least one


@dataclass(frozen=True, slots=True)
class Scenario:
    path: Path
    start: datetime
    end: datetime
    accounts: tuple[ScenarioAccount, ...]
    flows_dir: Path
    templates_dir: Path
    profile: PolicyProfile
    actions: tuple[Action, ...]
    expectations: tuple[Expectation, ...]
    seed: int = 0
    description: str = ""
    resolution: timedelta = timedelta(0)


# What each action takes: (required keys, optional keys). `account` is optional everywhere.
_USER = frozenset({"user"})
ACTIONS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "comment": (_USER | {"text"}, frozenset({"media", "username"})),
    "live_comment": (_USER | {"text"}, frozenset({"media", "username"})),
    "live_stop": (frozenset(), frozenset({"media"})),
    "dm": (_USER | {"text"}, frozenset()),
    "story_reply": (_USER | {"text"}, frozenset({"story"})),
    "story_mention": (_USER, frozenset({"url"})),
    "quick_reply": (_USER | {"payload"}, frozenset({"text"})),
    "postback": (_USER | {"payload"}, frozenset({"title"})),
    "referral": (_USER | {"ref"}, frozenset({"source"})),
    "optin": (_USER | {"topic"}, frozenset({"kind", "frequency", "title"})),
    "stop": (_USER | {"topic"}, frozenset()),
    "resume": (_USER | {"topic"}, frozenset()),
    # The business side: what a human agent or an operator does, through the bot's outbox.
    "agent_reply": (_USER | {"text"}, frozenset({"author"})),
    "notify": (_USER | {"topic", "text"}, frozenset({"kind", "content"})),
    "handoff": (_USER, frozenset({"reason"})),
    "release": (_USER, frozenset()),
}
# Played by the bot's side, after the user actions of the same instant have been processed.
BUSINESS_ACTIONS = frozenset({"agent_reply", "notify", "handoff", "release"})
_TOP_KEYS = (
    "description",
    "start",
    "seed",
    "accounts",
    "flows",
    "templates",
    "policy_profile",
    "until",
    "resolution",
    "timeline",
    "expect",
)
_ENTRY_KEYS = ("at", "repeat", "every")
_ACCOUNT_KEYS = ("id", "platform", "name")
_EXPECT_FILTERS = {
    "sent": ("to", "basis", "kind", "text", "account"),
    "dropped": ("to", "reason", "outcome", "kind", "text", "account"),
}
_OPTIN_KINDS = {
    "marketing": OptInKind.MARKETING,
    "notification_messages": OptInKind.MARKETING,
    "one_time": OptInKind.ONE_TIME,
    "one_time_notif_req": OptInKind.ONE_TIME,
}


@dataclass(slots=True)
class _Doc:
    """Parsed YAML plus where each key and value was written, for file:line errors."""

    source: str
    keys: dict[YamlPath, tuple[int, int]] = field(default_factory=dict)
    values: dict[YamlPath, tuple[int, int]] = field(default_factory=dict)
    raw: dict[YamlPath, str] = field(default_factory=dict)

    def line(self, path: YamlPath) -> int:
        return self._pos(path)[0]

    def _pos(self, path: YamlPath, at_key: bool = False) -> tuple[int, int]:
        if at_key and path in self.keys:
            return self.keys[path]
        for n in range(len(path), -1, -1):
            if path[:n] in self.values:
                return self.values[path[:n]]
        return (1, 1)

    def error(self, path: YamlPath, message: str, *, at_key: bool = False) -> ScenarioError:
        line, column = self._pos(path, at_key)
        where = _format_path(path)
        field_ = f" {where}:" if where else ""
        return ScenarioError(f"{self.source}:{line}:{column}: error:{field_} {message}")

    def unknown(self, path: YamlPath, key: str, known: Iterable[str], what: str) -> ScenarioError:
        close = difflib.get_close_matches(key, list(known), n=1)
        hint = f"; did you mean {close[0]}?" if close else f" (known: {', '.join(known)})"
        return self.error((*path, key), f"unknown key for {what}{hint}", at_key=True)

    def text(self, path: YamlPath, value: Any) -> str:
        """A scalar as the author wrote it: `text: yes` is the word, not YAML 1.1's true."""
        if isinstance(value, dict | list) or value is None:
            raise self.error(path, "expected a text value")
        return self.raw.get(path, str(value))


def _format_path(path: YamlPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _compose(text: str, source: str) -> tuple[Any, _Doc]:
    """Parse with line marks on every node (libyaml when present: bench files are large)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    doc = _Doc(source)
    try:
        node = yaml.compose(text, Loader=loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "not valid YAML"
        raise ScenarioError(f"{source}:{line}:{column}: error: invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{source}:1:1: error: invalid YAML: {exc}") from None
    if node is None:
        return None, doc
    constructor = yaml.constructor.SafeConstructor()

    def walk(n: yaml.Node, path: YamlPath) -> Any:
        doc.values[path] = (n.start_mark.line + 1, n.start_mark.column + 1)
        if isinstance(n, yaml.MappingNode):
            constructor.flatten_mapping(n)
            out: dict[str, Any] = {}
            for key_node, value_node in n.value:
                key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
                child = (*path, key)
                doc.keys[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                if key in out:
                    raise doc.error(child, "this key is written twice", at_key=True)
                out[key] = walk(value_node, child)
            return out
        if isinstance(n, yaml.SequenceNode):
            return [walk(item, (*path, i)) for i, item in enumerate(n.value)]
        value = constructor.construct_object(n)
        if not isinstance(value, str) and isinstance(n, yaml.ScalarNode) and value is not None:
            doc.raw[path] = str(n.value)
        return value

    return walk(node, ()), doc


def load_scenario(path: Path) -> Scenario:
    """Read and check a scenario file; raise ScenarioError with file:line on any mistake."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read the scenario: {exc.strerror}") from None
    return parse_scenario(text, path)


def parse_scenario(text: str, path: Path) -> Scenario:
    """The scenario in `text`; relative folders are taken from `path`'s folder."""
    data, doc = _compose(text, str(path))
    if not isinstance(data, dict):
        raise doc.error((), "a scenario is a mapping with a `timeline:` list")
    for key in data:
        if key not in _TOP_KEYS:
            raise doc.unknown((), key, _TOP_KEYS, "a scenario")
    base = path.parent
    start = DEFAULT_START
    if "start" in data:
        start = _absolute(doc, ("start",), data["start"])
    accounts = _accounts(doc, data.get("accounts"))
    flows_dir = _folder(doc, data, "flows", base)
    templates_dir = _folder(doc, data, "templates", base)
    profile = _profile(doc, data.get("policy_profile"), base)
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise doc.error(("seed",), "expected a whole number")
    timeline = data.get("timeline")
    if not isinstance(timeline, list):
        raise doc.error(("timeline",), "expected a list of `- at: ...` entries")
    actions: list[Action] = []
    for i, entry in enumerate(timeline):
        actions.extend(_entry(doc, i, entry, start, accounts))
    actions.sort(key=lambda a: a.at)  # stable: same instant keeps file order
    last = actions[-1].at if actions else start
    end = last + DEFAULT_UNTIL
    if "until" in data:
        end = _time(doc, ("until",), data["until"], last)
        if end < last:
            raise doc.error(("until",), "ends before the last timeline entry")
    raw_expect = data.get("expect") or []
    if not isinstance(raw_expect, list):
        raise doc.error(("expect",), "expected a list of expectations")
    expectations = tuple(_expectation(doc, i, e, start) for i, e in enumerate(raw_expect))
    description = data.get("description") or ""
    resolution = _duration(doc, ("resolution",), data.get("resolution", 0))
    return Scenario(
        path=path,
        start=start,
        end=end,
        accounts=accounts,
        flows_dir=flows_dir,
        templates_dir=templates_dir,
        profile=profile,
        actions=tuple(actions),
        expectations=expectations,
        seed=seed,
        description=str(description),
        resolution=resolution,
    )


def _absolute(doc: _Doc, path: YamlPath, value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        try:
            t = datetime.fromisoformat(value.strip())
        except ValueError:
            pass
        else:
            return t if t.tzinfo else t.replace(tzinfo=UTC)
    raise doc.error(path, f"expected an ISO time like 2026-03-02T11:00:00Z, got {value!r}")


def _duration(doc: _Doc, path: YamlPath, value: Any) -> timedelta:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return timedelta(seconds=value)
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError:
            pass
    raise doc.error(path, f"expected a duration like 0s, 15m, 3d 2h, got {value!r}")


def _time(doc: _Doc, path: YamlPath, value: Any, origin: datetime) -> datetime:
    """An offset from `origin` (`15m`, `3d 2h`) or an absolute ISO time."""
    if isinstance(value, datetime | date) or (isinstance(value, str) and "-" in value):
        return _absolute(doc, path, value)
    return origin + _duration(doc, path, value)


def _mapping(doc: _Doc, path: YamlPath, value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise doc.error(path, f"expected a mapping for {what}")
    return value


def _accounts(doc: _Doc, raw: Any) -> tuple[ScenarioAccount, ...]:
    if raw is None:
        return tuple(ScenarioAccount(i, p, n) for i, p, n in DEFAULT_ACCOUNTS)
    if not isinstance(raw, list) or not raw:
        raise doc.error(("accounts",), "expected a list of accounts (id, platform, name)")
    out: list[ScenarioAccount] = []
    for i, item in enumerate(raw):
        path: YamlPath = ("accounts", i)
        item = _mapping(doc, path, item, "an account")
        for key in item:
            if key not in _ACCOUNT_KEYS:
                raise doc.unknown(path, key, _ACCOUNT_KEYS, "an account")
        if "id" not in item or "platform" not in item:
            raise doc.error(path, "an account needs id and platform")
        try:
            platform = Platform(str(item["platform"]).lower())
        except ValueError:
            raise doc.error((*path, "platform"), "expected instagram or messenger") from None
        account_id = doc.text((*path, "id"), item["id"])
        if any(a.id == account_id for a in out):
            raise doc.error((*path, "id"), f"the account {account_id} is listed twice")
        out.append(ScenarioAccount(account_id, platform, str(item.get("name") or "")))
    return tuple(out)


def _folder(doc: _Doc, data: dict[str, Any], key: str, base: Path) -> Path:
    """Written folders are relative to the scenario file; unwritten ones are ./flows, as for
    `bot check`."""
    if key not in data:
        if not Path(key).is_dir():
            raise doc.error((), f"no ./{key} folder here: write `{key}:` in the scenario")
        return Path(key)
    value = data[key]
    if not isinstance(value, str) or not value:
        raise doc.error((key,), "expected a folder path")
    p = Path(value).expanduser()
    p = p if p.is_absolute() else base / p
    if not p.is_dir():
        raise doc.error((key,), f"no such folder: {p}")
    return p


def _profile(doc: _Doc, raw: Any, base: Path) -> PolicyProfile:
    if raw is None:
        return PolicyProfile()
    try:
        if isinstance(raw, str):
            p = Path(raw).expanduser()
            return load_profile(p if p.is_absolute() else base / p)
        if isinstance(raw, dict):
            return profile_from_mapping(raw)
    except ProfileError as exc:
        if isinstance(raw, dict):
            keys = tuple(str(exc.key).split(".")) if exc.key else ()
            raise doc.error(("policy_profile", *keys), exc.problem, at_key=True) from None
        raise doc.error(("policy_profile",), str(exc)) from None
    raise doc.error(("policy_profile",), "expected a profile file or a mapping of overrides")


def _pick_account(
    doc: _Doc, path: YamlPath, name: str | None, accounts: Sequence[ScenarioAccount]
) -> ScenarioAccount:
    """`account:` is an id, a platform (its first account) or a name; default the first."""
    if name is None:
        return accounts[0]
    for a in accounts:
        if name in (a.id, a.name):
            return a
    for a in accounts:
        if name == a.platform.value:
            return a
    known = ", ".join(a.platform.value for a in accounts)
    raise doc.error(path, f"no account {name!r} (use an id, a name or a platform: {known})")


def _entry(
    doc: _Doc, i: int, raw: Any, start: datetime, accounts: Sequence[ScenarioAccount]
) -> list[Action]:
    path: YamlPath = ("timeline", i)
    entry = _mapping(doc, path, raw, "a timeline entry (at: and one action)")
    names = [k for k in entry if k not in _ENTRY_KEYS]
    for key in names:
        if key not in ACTIONS:
            raise doc.unknown(path, key, [*_ENTRY_KEYS, *ACTIONS], "a timeline entry")
    if len(names) != 1:
        found = ", ".join(names) or "none"
        raise doc.error(path, f"an entry holds exactly one action (found: {found})")
    if "at" not in entry:
        raise doc.error(path, "an entry needs `at:` (an offset like 15m, or an ISO time)")
    at = _time(doc, (*path, "at"), entry["at"], start)
    if at < start:
        raise doc.error((*path, "at"), "is before the scenario's start")
    repeat = entry.get("repeat", 1)
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise doc.error((*path, "repeat"), "expected a whole number of at least 1")
    every = _duration(doc, (*path, "every"), entry.get("every", 0))
    name = names[0]
    apath = (*path, name)
    args_raw = entry[name]
    if args_raw is None:
        args_raw = {}
    args_map = _mapping(doc, apath, args_raw, f"the {name} action's settings")
    required, optional = ACTIONS[name]
    known = sorted(required | optional | {"account"})
    for key in args_map:
        if key not in known:
            raise doc.unknown(apath, key, known, f"a {name} action")
    missing = sorted(required - set(args_map))
    if missing:
        raise doc.error(apath, f"{name} needs {', '.join(missing)}")
    args = {k: doc.text((*apath, k), v) for k, v in args_map.items()}
    account = _pick_account(doc, (*apath, "account"), args.pop("account", None), accounts)
    _check_action(doc, apath, name, args)
    line = doc.line(path)
    out: list[Action] = []
    for n in range(1, repeat + 1):
        concrete = {k: v.replace("{n}", str(n)) for k, v in args.items()}
        user = concrete.pop("user", None)
        when = at + every * (n - 1)
        out.append(Action(when, name, account, user, concrete, line, _format_path(path)))
    return out


def _check_action(doc: _Doc, path: YamlPath, name: str, args: dict[str, str]) -> None:
    if "kind" in args and name in ("optin", "notify") and args["kind"] not in _OPTIN_KINDS:
        raise doc.error((*path, "kind"), "expected marketing or one_time")
    if name == "agent_reply" and args.get("author", "human") not in ("human", "automation"):
        raise doc.error((*path, "author"), "expected human or automation")
    if name == "notify" and "content" in args:
        try:
            Content(args["content"])
        except ValueError:
            kinds = ", ".join(c.value for c in Content if c is not Content.OPTIN_REQUEST)
            raise doc.error((*path, "content"), f"expected one of {kinds}") from None
    frequency = args.get("frequency", "WEEKLY").upper()
    if name == "optin" and frequency not in ("DAILY", "WEEKLY", "MONTHLY"):
        raise doc.error((*path, "frequency"), "expected DAILY, WEEKLY or MONTHLY")


def _expectation(doc: _Doc, i: int, raw: Any, start: datetime) -> Expectation:
    path: YamlPath = ("expect", i)
    entry = _mapping(doc, path, raw, "an expectation")
    line = doc.line(path)
    source = json.dumps(entry, default=str, ensure_ascii=False)
    if "refused_by_meta" in entry:
        if len(entry) != 1:
            raise doc.error(path, "refused_by_meta stands alone: `- refused_by_meta: 0`")
        n = entry["refused_by_meta"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise doc.error((*path, "refused_by_meta"), "expected a whole number")
        return Expectation("refused_by_meta", line, source, count=n)
    kind = "sent"
    body: dict[str, Any] = entry
    bpath: YamlPath = path
    if "sent" in entry or "dropped" in entry:
        if len(entry) != 1:
            raise doc.error(path, "write `- sent: {...}` or `- dropped: {...}` on its own")
        kind = next(iter(entry))
        bpath = (*path, kind)
        body = _mapping(doc, bpath, entry[kind], f"a {kind} expectation")
    known = [*_EXPECT_FILTERS[kind], "at", "within", "count"]
    for key in body:
        if key not in known:
            what = f"a {kind} expectation" if kind != "sent" or bpath != path else "an expectation"
            extra = ["sent", "dropped", "refused_by_meta"] if bpath == path else []
            raise doc.unknown(bpath, key, [*known, *extra], what)
    at = _time(doc, (*bpath, "at"), body["at"], start) if "at" in body else None
    within = _duration(doc, (*bpath, "within"), body.get("within", 0))
    count = body.get("count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise doc.error((*bpath, "count"), "expected a whole number")
    filters = {
        k: doc.text((*bpath, k), body[k]) for k in _EXPECT_FILTERS[kind] if body.get(k) is not None
    }
    return Expectation(kind, line, source, at, within, filters, count)


# --- the report ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimelineLine:
    """One thing that happened: a user action, a send, a drop, a refusal, or a flow note."""

    at: datetime
    kind: str  # action | sent | dropped | refused | note
    account: str
    user: str | None
    what: str  # the action, the basis, the drop's reason, the refusal's reason
    text: str = ""
    fields: Mapping[str, Any] = field(default_factory=dict)
    rank: tuple[int, int] = (0, 0)


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


def _excerpt(text: str, n: int = TEXT_EXCERPT) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= n else flat[: n - 1] + "…"


def _message_text(message: Any) -> str:
    """What a person would read: the text, a template's text or an opt-in request's title."""
    if not isinstance(message, Mapping):
        return ""
    if message.get("text"):
        return str(message["text"])
    att = message.get("attachment")
    if isinstance(att, Mapping):
        payload = att.get("payload")
        if isinstance(payload, Mapping):
            for key in ("text", "title", "url"):
                if payload.get(key):
                    return str(payload[key])
        return f"[{att.get('type', 'attachment')}]"
    return ""


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


# --- the run --------------------------------------------------------------------------------


@dataclass(slots=True)
class _World:
    """The two apps on loopback and what the runner needs of them."""

    clock: VirtualClock
    sim: Simulator
    config: Config
    runners: list[web.AppRunner]
    bot_url: str
    session: aiohttp.ClientSession


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    try:
        await runner.setup()  # the bot's app checks its flows here
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
    except BaseException:
        await runner.cleanup()  # close what started (the database), or the process hangs
        raise
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


def _labels(accounts: Sequence[ScenarioAccount]) -> dict[str, str]:
    """How the timeline names an account: its platform, unless two share one."""
    per = Counter(a.platform for a in accounts)
    return {a.id: a.platform.value if per[a.platform] == 1 else a.name or a.id for a in accounts}


class _Runner:
    """Plays the scenario against the running bot and collects what happened."""

    def __init__(self, scenario: Scenario, world: _World, rt: Runtime) -> None:
        assert rt.db and rt.worker and rt.dispatcher and rt.sender, "the app's workers run"
        self.s = scenario
        self.w = world
        self.profile = rt.profile
        self.db = rt.db
        self.worker = rt.worker
        self.dispatcher = rt.dispatcher
        self.sender = rt.sender
        self.names: dict[str, str] = {}  # user id -> scenario name
        self.labels = _labels(scenario.accounts)
        self.platforms = {a.id: a.platform.value for a in scenario.accounts}
        self.lines: list[TimelineLine] = []
        self._seen_log = 0
        self._seq = 0
        self._held: list[dict[str, Any]] = []  # echoes, delivered with the next actions
        self._pending: list[dict[str, Any]] = []  # user actions played, not yet delivered
        self._ticked: datetime | None = None  # when the dispatcher last ran

    # -- the loop ------------------------------------------------------------------------

    async def run(self, resolution: timedelta = timedelta(0)) -> None:
        """Jump from one due time to the next: the next action, the bot's next wake, the end.

        Each user action is played at its own time (the simulator's model and the webhook's
        timestamps are exact); with a `resolution`, what was played is delivered to the bot
        at most once per that much virtual time, as Meta's batched webhooks arrive, so big
        scenarios run in fewer, larger steps. The bot's own timers are always kept exactly.
        """
        clock, actions, end = self.w.clock, self.s.actions, self.s.end
        i = 0
        again = 0  # ticks in a row at one instant
        deliver_from = clock.now()  # no delivery before this (last delivery + resolution)
        wake: datetime | None = None
        fresh = True  # the bot's state may have changed since `wake` was read
        target = clock.now()
        while True:
            while i < len(actions) and actions[i].at <= target:
                a = actions[i]
                i += 1
                if a.at > clock.now():
                    clock.set(a.at)
                if a.name in BUSINESS_ACTIONS:
                    await self._deliver()  # what users did before reaches the bot first
                    await self._play_business(a)
                    fresh = True
                else:
                    await self._play_user(a)
            if target > clock.now():
                clock.set(target)
            now = clock.now()
            if self._pending and (now >= deliver_from or now >= end):
                await self._deliver()
                deliver_from = now + resolution
                fresh = True
            if fresh:
                wake = await self._next_due(self._ticked)
                fresh = False
            if wake is not None and wake <= now:
                wake = await self.dispatcher.tick()
                self._ticked = now
                await self._echoes()
            if now >= end and i >= len(actions):
                await self._deliver(echoes=True)
                return
            if wake is not None and wake <= now:
                # Due again at this instant (a cap freed a slot, more runs than one tick
                # takes): tick again. A wake that stays in the past is stale work the bot
                # does not clear: go on to the next time something else is due.
                again += 1
                if again < 3:
                    target = now
                    continue
                later = [self.sender.next_wake, await self._next_due(now, outbox=False)]
                wake = min((t for t in later if t is not None and t > now), default=None)
            again = 0
            candidates = [end]
            if i < len(actions):
                candidates.append(actions[i].at)
            if self._pending:
                candidates.append(max(deliver_from, now))
            if wake is not None:
                candidates.append(wake)
            sleeper = clock.next_wake()
            if sleeper is not None and sleeper > now:
                candidates.append(sleeper)
            target = min(candidates)

    async def _next_due(self, ticked: datetime | None, *, outbox: bool = True) -> datetime | None:
        """When the dispatcher next has work, in one query instead of a tick's thirty SQLite
        round trips: a queued send, or a flow run due after the last tick (one due before it
        was offered to that tick already)."""
        after = -1 if ticked is None else to_ms(ticked)
        sql = "SELECT min(due_at), NULL FROM flow_runs WHERE due_at >= ?"
        if outbox:
            sql += (
                " UNION ALL SELECT min(due_at), min(deadline) FROM outbox WHERE state = 'pending'"
            )
        async with self.db.reader.execute(sql, (after,)) as cur:
            rows = await cur.fetchall()
        times = [t for row in rows for t in row if t is not None]
        return from_ms(min(times)) if times else None

    # -- user actions: Meta's side, delivered as signed, batched webhooks ------------------

    def _uid(self, name: str) -> str:
        uid = self.w.sim.user_id(name)
        self.names.setdefault(uid, name)
        return uid

    async def _play_user(self, a: Action) -> None:
        """The user acts now: the simulator records it; its webhook waits for `_deliver`."""
        self._record_action(a)
        try:
            d = await self._player_call(a)
        except (SimulatorError, ValueError) as exc:
            raise ScenarioError(
                f"{self.s.path}:{a.line}: error: {a.where}.{a.name}: {exc}"
            ) from None
        if d is not None:
            self._pending.append(d.payload)

    async def _deliver(self, *, echoes: bool = False) -> None:
        """Deliver what users did, with the echoes held since, in as few signed POSTs as Meta
        would use; then let the bot process them. Echoes alone wait: they change no window."""
        if not self._pending and not (echoes and self._held):
            return
        payloads = self._held + self._pending
        self._held, self._pending = [], []
        await self._post(payloads)
        await self.worker.drain()

    async def _player_call(self, a: Action) -> Delivered | None:
        p = self.w.sim.player
        acct = a.account.id
        g = a.args.get
        user = a.user or ""
        if a.user is not None:
            self._uid(a.user)
        if a.name == "comment":
            return await p.comment(
                acct, user, g("media", "reel1"), a.args["text"], username=g("username")
            )
        if a.name == "live_comment":
            return await p.live_comment(acct, user, g("media", "live1"), a.args["text"])
        if a.name == "live_stop":
            self.w.sim.live_stop(acct, g("media", "live1"))
            return None
        if a.name == "dm":
            return await p.dm(acct, user, a.args["text"])
        if a.name == "story_reply":
            return await p.story_reply(acct, user, g("story", "story1"), a.args["text"])
        if a.name == "story_mention":
            return await p.story_mention(acct, user, g("url", "https://cdn.example/story.jpg"))
        if a.name == "quick_reply":
            payload = a.args["payload"]
            return await p.quick_reply(acct, user, payload, g("text", payload))
        if a.name == "postback":
            payload = a.args["payload"]
            return await p.postback(acct, user, payload, g("title", payload))
        if a.name == "referral":
            return await p.referral(acct, user, a.args["ref"], source=g("source"))
        if a.name == "optin":
            kind = _OPTIN_KINDS[g("kind", "marketing")]
            freq = g("frequency")
            return await p.optin(
                acct,
                user,
                kind.value,
                a.args["topic"],
                freq.upper() if freq else None,
                title=g("title"),
            )
        if a.name == "stop":
            return await p.stop(acct, user, a.args["topic"])
        if a.name == "resume":
            return await p.resume(acct, user, a.args["topic"])
        raise AssertionError(f"no player call for {a.name}")

    def _record_action(self, a: Action) -> None:
        g = a.args.get
        desc = {
            "comment": f'on {g("media", "reel1")}: "{g("text", "")}"',
            "live_comment": f'on live {g("media", "live1")}: "{g("text", "")}"',
            "live_stop": f"live video {g('media', 'live1')} ends",
            "dm": f'"{g("text", "")}"',
            "story_reply": f'to story {g("story", "story1")}: "{g("text", "")}"',
            "story_mention": "mentions the account in a story",
            "quick_reply": f'taps {g("payload")} "{g("text", g("payload"))}"',
            "postback": f"taps button {g('payload')}",
            "referral": f"opens a link with ref={g('ref')}",
            "optin": f"opts in: {g('kind', 'marketing')} {g('topic')} {g('frequency', '')}",
            "stop": f"stops {g('topic')}",
            "resume": f"resumes {g('topic')}",
            "agent_reply": f'{g("author", "human")} agent writes: "{g("text", "")}"',
            "notify": f'operator notifies on {g("topic")}: "{g("text", "")}"',
            "handoff": f"a human takes the conversation over {g('reason', '')}",
            "release": "the human hands the conversation back",
        }[a.name]
        fields = {"action": a.name, "line": a.line, "args": dict(a.args)}
        self._add(
            a.at, "action", self.labels[a.account.id], a.user, a.name, desc.strip(), fields, 0
        )

    def _add(
        self,
        at: datetime,
        kind: str,
        account: str,
        user: str | None,
        what: str,
        text: str,
        fields: Mapping[str, Any],
        rank: int,
    ) -> None:
        self._seq += 1
        self.lines.append(
            TimelineLine(at, kind, account, user, what, text, dict(fields), (rank, self._seq))
        )

    async def _post(self, payloads: Iterable[Mapping[str, Any]]) -> None:
        """Signed deliveries to the bot's webhook, entries batched per object like Meta does."""
        by_object: dict[str, list[Any]] = {}
        for payload in payloads:
            by_object.setdefault(str(payload["object"]), []).extend(payload["entry"])
        for obj, entries in by_object.items():
            for k in range(0, len(entries), MAX_ENTRIES_PER_POST):
                body = encode({"object": obj, "entry": entries[k : k + MAX_ENTRIES_PER_POST]})
                headers = {
                    "Content-Type": "application/json",
                    "X-Hub-Signature-256": sign(APP_SECRET, body),
                }
                async with self.w.session.post(self.w.bot_url, data=body, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        raise ScenarioError(f"the bot's webhook answered {r.status} to a delivery")

    async def _echoes(self) -> None:
        """Hold what Meta sends back after each accepted send, message echoes and the
        account's own comments (POLICY.md §2), for the next step's delivery: they change no
        window, so one POST per step serves them all."""
        sim = self.w.sim
        new = sim.log.entries[self._seen_log :]
        self._seen_log = len(sim.log.entries)
        for e in new:
            if not e.accepted or not e.message_id:
                continue
            if e.endpoint == "messages" and e.user_id:
                message = e.body.get("message")
                msg = message if isinstance(message, dict) else {}
                d = await sim.player.echo(e.account_id, e.user_id, e.message_id, msg)
                self._held.append(d.payload)
            elif e.endpoint in ("replies", "comments") and e.message_id in sim.model.comments:
                comment = sim.model.comments[e.message_id]
                self._held.append((await sim.player.own_comment(e.account_id, comment)).payload)

    # -- the business side: a human agent or an operator, through the bot's own outbox ----

    async def _play_business(self, a: Action) -> None:
        self._record_action(a)
        assert a.user is not None
        uid = self._uid(a.user)
        account = self.w.config.account(a.account.id)
        assert account is not None
        now = self.w.clock.now()
        db = self.db
        async with db.transaction() as conn:
            state = await load_state(conn, account.id, uid, account.platform)
            if a.name in ("handoff", "release"):
                new = set_handoff(state, now if a.name == "handoff" else None)
                await save_state(conn, account.id, uid, new, now)
                return
            intent = self._intent(a)
            decision = decide(state, intent, now, self.profile)
            source = f"scenario/{a.name}"
            if isinstance(decision, Refused):
                # As the engine does for a flow's send the policy refuses when queued.
                await log_send(
                    conn,
                    at=now,
                    outcome=Outcome.DROPPED,
                    account_id=account.id,
                    user_id=uid,
                    kind=SendKind.MESSAGE,
                    reason=str(decision.reason),
                    detail=f"{source}: {decision.detail}",
                )
                return
            await enqueue(
                conn,
                account_id=account.id,
                user_id=uid,
                kind=SendKind.MESSAGE,
                intent=intent,
                message={"text": a.args["text"]},
                due_at=now,
                deadline=decision.until,
                now=now,
                source=source,
            )

    @staticmethod
    def _intent(a: Action) -> Intent:
        if a.name == "agent_reply":
            # A human's support answer may use HUMAN_AGENT up to 7 days on (POLICY.md §1);
            # `author: automation` shows the same words refused when a bot writes them.
            author = Author(a.args.get("author", "human"))
            return Intent(author=author, content=Content.SUPPORT, tag=HUMAN_AGENT_TAG)
        content = Content(a.args.get("content", Content.PROMOTIONAL.value))
        kind = a.args.get("kind")
        if kind is None:
            return Intent(content=content, topic=a.args["topic"])
        return Intent(content=content, topic=a.args["topic"], via_token=_OPTIN_KINDS[kind])

    # -- collecting what happened -----------------------------------------------------------

    async def collect(self, notes: bool) -> list[TimelineLine]:
        """The timeline: actions as played, the bot's send log and notes, Meta's refusals."""
        reader = self.db.reader
        async with reader.execute(
            "SELECT id, at, account_id, user_id, flow_id, note FROM flow_notes ORDER BY id"
        ) as cur:
            note_rows = list(await cur.fetchall())
        by_moment: dict[tuple[str, str | None, int], list[tuple[str | None, str]]] = {}
        for _, at, acct, uid, flow_id, note in note_rows:
            by_moment.setdefault((acct, uid, at), []).append((flow_id, note))
        async with reader.execute(
            "SELECT s.at, s.outcome, s.account_id, s.user_id, s.kind, s.basis, s.reason,"
            " s.detail, s.error_code, s.error_subcode, s.comment_id, s.message_id,"
            " o.body, o.source FROM send_log s LEFT JOIN outbox o ON o.id = s.outbox_id"
            " ORDER BY s.id"
        ) as cur:
            for row in await cur.fetchall():
                self._send_row(row, by_moment)
        for e in self.w.sim.log.entries:
            if not e.accepted:
                self._refused(e)
        for _, at, acct, uid, flow_id, note in note_rows:
            fields = {"flow": flow_id, "account_id": acct, "note": note}
            if _NOT_SCHEDULED in note:
                # A follow-up no basis could carry is never queued: the engine says so only
                # in its notes, so the timeline shows it as a drop.
                step, _, why = note.partition(": ")
                source = f"{flow_id}/{step.removeprefix('step ')}" if flow_id else None
                self._add(
                    from_ms(at),
                    "dropped",
                    self.labels.get(acct, acct),
                    self._name(uid),
                    "followup_not_scheduled",
                    why,
                    fields | {"outcome": "dropped", "source": source},
                    2,
                )
            elif notes:
                self._add(
                    from_ms(at),
                    "note",
                    self.labels.get(acct, acct),
                    self._name(uid),
                    flow_id or "",
                    f"{flow_id}: {note}" if flow_id else note,
                    fields,
                    1,
                )
        self.lines.sort(key=lambda x: (x.at, x.rank))
        return self.lines

    def _send_row(
        self,
        row: Sequence[Any],
        notes: Mapping[tuple[str, str | None, int], list[tuple[str | None, str]]],
    ) -> None:
        at, outcome, acct, uid, kind, basis, reason, detail = row[:8]
        code, subcode, comment_id, message_id, body, source = row[8:]
        full = _message_text(json.loads(body) if body else {})
        text = _excerpt(full)
        if source is None and detail:
            # Refused when queued, so no outbox row: the flow's note names the step.
            for flow_id, note in notes.get((acct, uid, at), []):
                if note.endswith(detail) and note.startswith("step "):
                    source = f"{flow_id}/{note[5:].partition(':')[0]}"
        fields: dict[str, Any] = {
            "send_kind": kind,
            "message_text": full,
            "source": source,
            "account_id": acct,
            "platform": self.platforms.get(acct),
            "user_id": uid,
            "comment_id": comment_id,
        }
        label, who = self.labels.get(acct, acct), self._name(uid)
        if outcome == Outcome.SENT:
            fields |= {"basis": basis, "message_id": message_id}
            self._add(from_ms(at), "sent", label, who, basis or "?", text, fields, 2)
            return
        fields |= {
            "outcome": outcome,
            "reason": reason,
            "detail": detail,
            "error_code": code,
            "error_subcode": subcode,
        }
        shown = " ".join(str(detail or "").split())
        if text:
            shown = f'{shown} ["{text}"]' if shown else f'"{text}"'
        self._add(from_ms(at), "dropped", label, who, reason or outcome, shown, fields, 2)

    def _refused(self, e: LogEntry) -> None:
        recipient = dict(e.recipient)
        uid = e.user_id or recipient.get("id")
        full = _message_text(e.body.get("message")) or str(e.body.get("message", ""))
        text = _excerpt(full)
        fields = {
            "message_text": full,
            "reason": e.reason.value if e.reason else None,
            "code": e.code,
            "subcode": e.subcode,
            "detail": e.detail,
            "endpoint": e.endpoint,
            "recipient": recipient,
            "account_id": e.account_id,
            "platform": self.platforms.get(e.account_id),
            "fault": e.fault,
        }
        what = e.reason.value if e.reason else "refused"
        self._add(
            e.time,
            "refused",
            self.labels.get(e.account_id, e.account_id),
            self._name(uid),
            what,
            text,
            fields,
            3,
        )

    def _name(self, uid: str | None) -> str | None:
        if uid is None:
            return None
        return self.names.get(uid, uid)


async def run_scenario(
    scenario: Scenario,
    data_dir: Path,
    *,
    notes: bool = False,
    resolution: timedelta | None = None,
) -> Report:
    """Run the scenario with its SQLite file in `data_dir`; the report says what happened.

    `resolution` overrides the scenario's (see `_Runner.run`).
    """
    from bot.app import RUNTIME, create_app

    wall = SystemClock()  # only to report how long the run took
    started = wall.monotonic()
    clock = VirtualClock(scenario.start)
    accounts = [(a.id, a.platform.value, f"token-{a.id}") for a in scenario.accounts]
    # Echoes and the account's own comments are delivered by the runner, batched per instant.
    sim = Simulator(
        clock,
        accounts,
        APP_SECRET,
        None,
        seed=scenario.seed,
        echoes=False,
        own_comment_webhooks=False,
    )
    runners: list[web.AppRunner] = []
    session = aiohttp.ClientSession()
    try:
        sim_runner, sim_url = await _serve(create_simulator_app(sim))
        runners.append(sim_runner)
        config = config_from_mapping(
            {
                "app_secret": APP_SECRET,
                "verify_token": "simulate-verify-token",
                "database": {"path": str(data_dir / "simulate.sqlite3")},
                "flows_dir": str(scenario.flows_dir),
                "templates_dir": str(scenario.templates_dir),
                "accounts": [
                    {
                        "id": a.id,
                        "platform": a.platform.value,
                        "name": a.name,
                        "token": f"token-{a.id}",
                        "graph_base_url": sim_url,
                    }
                    for a in scenario.accounts
                ],
            },
            env={},
            source=str(scenario.path),
        )
        app = create_app(config, clock=clock, profile=scenario.profile, start_workers=False)
        bot_runner, bot_url = await _serve(app)
        runners.append(bot_runner)
        world = _World(clock, sim, config, runners, f"{bot_url}{config.webhook_path}", session)
        runner = _Runner(scenario, world, app[RUNTIME])
        await runner.run(scenario.resolution if resolution is None else resolution)
        lines = await runner.collect(notes)
    finally:
        for r in reversed(runners):
            await r.cleanup()
        await session.close()
        await sim.close()
    results = check_expectations(scenario.expectations, lines)
    return Report(scenario, tuple(lines), results, wall.monotonic() - started)


# --- the command ----------------------------------------------------------------------------


def add_simulate_parser(sub: Any) -> None:
    sm = sub.add_parser(
        "simulate",
        help="run the flows against a scripted timeline on a virtual clock",
        description="Play a scenario (docs/simulate.md) against the real bot and the Graph API "
        "simulator; exit 1 if Meta's rules refused a send or an expectation failed.",
    )
    sm.add_argument("scenario", type=Path, help="the scenario YAML file")
    sm.add_argument("--json", action="store_true", help="machine-readable output")
    sm.add_argument("--notes", action="store_true", help="also show the flows' notes")
    sm.add_argument("--summary", action="store_true", help="only the summary and failures")
    sm.add_argument("--data", type=Path, help="keep the SQLite file in this folder")
    sm.add_argument(
        "--resolution",
        help="run the bot at most once per this much virtual time, e.g. 1m (default: the "
        "scenario's, else exact)",
    )


def simulate_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """`bot simulate`: 0 when Meta refused nothing and every expectation held, else 1."""
    out = out or sys.stdout
    scenario = load_scenario(args.scenario)
    resolution = None
    if args.resolution is not None:
        try:
            resolution = parse_duration(args.resolution)
        except ValueError:
            raise ScenarioError(f"--resolution: not a duration: {args.resolution!r}") from None
    keep: Path | None = args.data
    data_dir = keep or Path(tempfile.mkdtemp(prefix="bot-simulate-"))
    try:
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for suffix in ("", "-wal", "-shm"):  # a fresh run, not the last one's state
                (keep / f"simulate.sqlite3{suffix}").unlink(missing_ok=True)
        report = asyncio.run(
            run_scenario(scenario, data_dir, notes=args.notes, resolution=resolution)
        )
    finally:
        if keep is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    if args.json:
        json.dump(report.to_json(), out, ensure_ascii=False, indent=1)
        out.write("\n")
    else:
        out.write(format_report(report, summary_only=args.summary))
    return report.exit_status
