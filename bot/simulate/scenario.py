"""The scenario: what `bot simulate` plays (accounts, a timeline of actions, expectations), and
the parser that reads it from YAML and points every mistake at its file:line:column.

The format is in docs/simulate.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.events import OptInKind, Platform
from bot.policy import (
    Content,
    PolicyProfile,
    ProfileError,
    load_profile,
    parse_duration,
    profile_from_mapping,
)
from bot.simulate.yamlpos import Doc, YamlPath, compose, format_path, read_scenario

__all__ = [
    "ACTIONS",
    "BUSINESS_ACTIONS",
    "DEFAULT_ACCOUNTS",
    "DEFAULT_START",
    "DEFAULT_UNTIL",
    "OPTIN_KINDS",
    "Action",
    "Expectation",
    "Scenario",
    "ScenarioAccount",
    "load_scenario",
    "parse_scenario",
]

DEFAULT_START = datetime(2026, 3, 2, 11, 0, tzinfo=UTC)
DEFAULT_UNTIL = timedelta(days=7)
DEFAULT_ACCOUNTS = (
    ("17841400000000001", Platform.INSTAGRAM, "sandbox_creator"),
    ("100000000000001", Platform.MESSENGER, "Sandbox Page"),
)


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
OPTIN_KINDS = {
    "marketing": OptInKind.MARKETING,
    "notification_messages": OptInKind.MARKETING,
    "one_time": OptInKind.ONE_TIME,
    "one_time_notif_req": OptInKind.ONE_TIME,
}


def load_scenario(path: Path) -> Scenario:
    """Read and check a scenario file; raise ScenarioError with file:line on any mistake."""
    return parse_scenario(read_scenario(path), path)


def parse_scenario(text: str, path: Path) -> Scenario:
    """The scenario in `text`; relative folders are taken from `path`'s folder."""
    data, doc = compose(text, str(path))
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


def _absolute(doc: Doc, path: YamlPath, value: Any) -> datetime:
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


def _duration(doc: Doc, path: YamlPath, value: Any) -> timedelta:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return timedelta(seconds=value)
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError:
            pass
    raise doc.error(path, f"expected a duration like 0s, 15m, 3d 2h, got {value!r}")


def _time(doc: Doc, path: YamlPath, value: Any, origin: datetime) -> datetime:
    """An offset from `origin` (`15m`, `3d 2h`) or an absolute ISO time."""
    if isinstance(value, datetime | date) or (isinstance(value, str) and "-" in value):
        return _absolute(doc, path, value)
    return origin + _duration(doc, path, value)


def _mapping(doc: Doc, path: YamlPath, value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise doc.error(path, f"expected a mapping for {what}")
    return value


def _accounts(doc: Doc, raw: Any) -> tuple[ScenarioAccount, ...]:
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


def _folder(doc: Doc, data: dict[str, Any], key: str, base: Path) -> Path:
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


def _profile(doc: Doc, raw: Any, base: Path) -> PolicyProfile:
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
    doc: Doc, path: YamlPath, name: str | None, accounts: Sequence[ScenarioAccount]
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
    doc: Doc, i: int, raw: Any, start: datetime, accounts: Sequence[ScenarioAccount]
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
        out.append(Action(when, name, account, user, concrete, line, format_path(path)))
    return out


def _check_action(doc: Doc, path: YamlPath, name: str, args: dict[str, str]) -> None:
    if "kind" in args and name in ("optin", "notify") and args["kind"] not in OPTIN_KINDS:
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


def _expectation(doc: Doc, i: int, raw: Any, start: datetime) -> Expectation:
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
