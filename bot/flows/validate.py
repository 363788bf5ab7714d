"""The flow file format, checked by hand (no jsonschema dependency) with a positioned problem
for every mistake. `flow.schema.json` describes the same keys for editors; a test keeps the
two in step (`accepted_keys`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from bot.events import OptInKind, Platform
from bot.flows import readers as r
from bot.flows.model import (
    Branch,
    BranchCase,
    Button,
    Collect,
    CollectKind,
    End,
    Flow,
    FollowUp,
    Goto,
    Guards,
    HandoffStep,
    MatchMode,
    PrivateReply,
    PublicReply,
    QuickReply,
    RequestOptin,
    SendStep,
    SetFieldStep,
    Step,
    StepType,
    TagStep,
    Trigger,
    TriggerType,
    UntagStep,
    WaitReply,
    YamlPath,
)
from bot.flows.normalize import joined, words
from bot.flows.problems import Severity
from bot.flows.readers import BAD, Ctx, Reader
from bot.policy import Content

__all__ = ["STEP_CLASSES", "accepted_keys", "read_file"]

T, ST = TriggerType, StepType
_CONTENT = r.enum_choice(Content, exclude=[Content.OPTIN_REQUEST])
_MATCH = r.enum_choice(MatchMode)
_OPTIN = r.choice({"marketing": OptInKind.MARKETING, "one_time": OptInKind.ONE_TIME})
_FREQUENCY = r.choice({"DAILY": "DAILY", "WEEKLY": "WEEKLY", "MONTHLY": "MONTHLY"}, upper=True)
WARNING = Severity.WARNING
_ALWAYS_ON = "is always on (POLICY.md §1, §2) and can't be turned off"


def _always_true(ctx: Ctx, value: Any, path: YamlPath) -> Any:
    if value is not True:
        ctx.report(path, f"{path[-1]} {_ALWAYS_ON}; remove the key or write true")
        return BAD
    return True


def _platforms(ctx: Ctx, value: Any, path: YamlPath) -> Any:
    names = r.texts(ctx, value, path)
    if names is BAD:
        return BAD
    read = r.enum_choice(Platform)
    got = [
        read(ctx, n, (*path, i) if isinstance(value, list) else path) for i, n in enumerate(names)
    ]
    return BAD if BAD in got else frozenset(got)


def _media(ctx: Ctx, value: Any, path: YamlPath) -> Any:
    if value == "any":
        return None
    if isinstance(value, list) and "any" in value:
        ctx.report(path, "write either media: any or a list of media ids, not both")
        return BAD
    return r.texts(ctx, value, path)


def _items(fields: Mapping[str, Reader], required: tuple[str, ...], what: str) -> Reader:
    def read(ctx: Ctx, value: Any, path: YamlPath) -> Any:
        if not isinstance(value, list) or not value:
            ctx.report(path, f"expected a list of {what}s")
            return BAD
        out = []
        for i, item in enumerate(value):
            got = r.mapping(ctx, item, (*path, i), fields, required, f"a {what}")
            out.append(got if got is not None and all(k in got for k in required) else BAD)
        return BAD if BAD in out else out

    return read


QUICK_REPLY_FIELDS: Final[Mapping[str, Reader]] = {"title": r.text, "payload": r.text}
BUTTON_FIELDS: Final[Mapping[str, Reader]] = {"title": r.text, "url": r.text, "payload": r.text}
CASE_FIELDS: Final[Mapping[str, Reader]] = {
    "payload": r.texts,
    "keywords": r.texts,
    "match": _MATCH,
    "goto": r.ident,
}
_quick_replies_raw = _items(QUICK_REPLY_FIELDS, ("title", "payload"), "quick reply")
_buttons_raw = _items(BUTTON_FIELDS, ("title",), "button")
_cases_raw = _items(CASE_FIELDS, ("goto",), "branch case")


def _quick_replies(ctx: Ctx, value: Any, path: YamlPath) -> Any:
    got = _quick_replies_raw(ctx, value, path)
    if got is BAD:
        return BAD
    return tuple(QuickReply(title=q["title"], payload=q["payload"]) for q in got)


def _buttons(ctx: Ctx, value: Any, path: YamlPath) -> Any:
    got = _buttons_raw(ctx, value, path)
    if got is BAD:
        return BAD
    for i, b in enumerate(got):
        if ("url" in b) == ("payload" in b):
            ctx.report((*path, i), "a button takes either url (a link) or payload (a postback)")
            return BAD
    return tuple(Button(title=b["title"], url=b.get("url"), payload=b.get("payload")) for b in got)


def _keywords_ok(ctx: Ctx, kws: tuple[str, ...], mode: MatchMode, path: YamlPath) -> bool:
    ok = True
    for i, kw in enumerate(kws):
        at = (*path, i) if (*path, i) in ctx.loc.values else path
        if mode is MatchMode.REGEX:
            try:
                re.compile(kw)
            except re.error as exc:
                ctx.report(at, f"not a valid regular expression: {exc}")
                ok = False
            continue
        toks = words(kw) if mode is not MatchMode.ANY else tuple(joined(kw).split())
        if not toks:
            ctx.report(at, f"keyword {kw!r} has no letters, digits or emoji to match")
            ok = False
        elif mode is MatchMode.WORD and len(toks) > 1:
            ctx.report(at, f"keyword {kw!r} is several words; use match: phrase for it")
            ok = False
    return ok


def _cases(ctx: Ctx, value: Any, path: YamlPath) -> Any:
    got = _cases_raw(ctx, value, path)
    if got is BAD:
        return BAD
    out = []
    for i, c in enumerate(got):
        if ("payload" in c) == ("keywords" in c):
            ctx.report((*path, i), "a branch case takes either payload or keywords")
            return BAD
        mode = c.get("match", MatchMode.WORD)
        kws = c.get("keywords", ())
        if not _keywords_ok(ctx, kws, mode, (*path, i, "keywords")):
            return BAD
        out.append(
            BranchCase(goto=c["goto"], payloads=c.get("payload", ()), keywords=kws, match=mode)
        )
    return tuple(out)


FILE_FIELDS: Final[Mapping[str, Reader]] = {"flows": lambda ctx, v, p: v}
FLOW_FIELDS: Final[Mapping[str, Reader]] = {
    "id": r.ident,
    "description": r.text,
    "priority": r.integer(-1_000_000),
    "enabled": r.boolean,
    "platforms": _platforms,
    "trigger": lambda ctx, v, p: v,
    "guards": lambda ctx, v, p: v,
    "steps": lambda ctx, v, p: v,
}
GUARD_FIELDS: Final[Mapping[str, Reader]] = {
    "cooldown": r.duration,
    "daily_cap": r.integer(1),
    "ignore_own_comments": _always_true,
    "once_per_comment": _always_true,
}
_KEYWORDS: Final[Mapping[str, Reader]] = {"keywords": r.texts, "match": _MATCH}
TRIGGER_FIELDS: Final[Mapping[TriggerType, Mapping[str, Reader]]] = {
    T.COMMENT: {
        "media": _media,
        **_KEYWORDS,
        "include_replies": r.boolean,
        "live": r.boolean,
    },
    T.STORY_REPLY: _KEYWORDS,
    T.STORY_MENTION: {},
    T.DM: _KEYWORDS,
    T.POSTBACK: {"payload": r.texts},
    T.QUICK_REPLY: {"payload": r.texts},
    T.REFERRAL: {"ref": r.texts},
}
_TRIGGER_REQUIRED = {T.POSTBACK: ("payload",), T.QUICK_REPLY: ("payload",), T.REFERRAL: ("ref",)}

_MESSAGE: Final[Mapping[str, Reader]] = {
    "template": r.text,
    "content": _CONTENT,
    "quick_replies": _quick_replies,
    "buttons": _buttons,
}
STEP_FIELDS: Final[Mapping[StepType, Mapping[str, Reader]]] = {
    ST.PRIVATE_REPLY: _MESSAGE,
    ST.PUBLIC_REPLY: {"templates": r.texts, "delay": r.duration_or_zero},
    ST.SEND: {**_MESSAGE, "image": r.text},
    ST.WAIT_REPLY: {"timeout": r.duration, "on_timeout": r.ident, "save_as": r.ident},
    ST.BRANCH: {"cases": _cases, "default": r.ident},
    ST.COLLECT: {
        "kind": r.enum_choice(CollectKind),
        "template": r.text,
        "retry_template": r.text,
        "max_attempts": r.integer(1),
        "field": r.ident,
        "timeout": r.duration,
        "on_timeout": r.ident,
        "on_fail": r.ident,
    },
    ST.TAG: {"tags": r.texts},
    ST.UNTAG: {"tags": r.texts},
    ST.SET_FIELD: {"field": r.ident, "value": r.scalar, "from_answer": r.ident},
    ST.REQUEST_OPTIN: {"kind": _OPTIN, "topic": r.ident, "title": r.text, "frequency": _FREQUENCY},
    ST.FOLLOW_UP: {
        "delay": r.duration,
        "template": r.text,
        "topic": r.ident,
        "via_token": r.boolean,
        "content": _CONTENT,
    },
    ST.HANDOFF: {"reason": r.text},
    ST.GOTO: {"to": r.ident},
    ST.END: {},
}
_STEP_REQUIRED: Mapping[StepType, tuple[str, ...]] = {
    ST.PRIVATE_REPLY: ("template",),
    ST.PUBLIC_REPLY: ("templates",),
    ST.WAIT_REPLY: ("timeout",),
    ST.BRANCH: ("cases",),
    ST.COLLECT: ("kind", "template"),
    ST.TAG: ("tags",),
    ST.UNTAG: ("tags",),
    ST.SET_FIELD: ("field",),
    ST.REQUEST_OPTIN: ("kind", "topic", "title"),
    ST.FOLLOW_UP: ("delay", "template"),
    ST.GOTO: ("to",),
}
# Steps that never fall through take no `next:`.
_NO_NEXT = frozenset({ST.BRANCH, ST.HANDOFF, ST.GOTO, ST.END})
STEP_CLASSES: Final[Mapping[StepType, type[Step]]] = {
    ST.PRIVATE_REPLY: PrivateReply,
    ST.PUBLIC_REPLY: PublicReply,
    ST.SEND: SendStep,
    ST.WAIT_REPLY: WaitReply,
    ST.BRANCH: Branch,
    ST.COLLECT: Collect,
    ST.TAG: TagStep,
    ST.UNTAG: UntagStep,
    ST.SET_FIELD: SetFieldStep,
    ST.REQUEST_OPTIN: RequestOptin,
    ST.FOLLOW_UP: FollowUp,
    ST.HANDOFF: HandoffStep,
    ST.GOTO: Goto,
    ST.END: End,
}


def _step_fields(kind: StepType) -> dict[str, Reader]:
    common: dict[str, Reader] = {"id": r.ident, "type": lambda ctx, v, p: v}
    if kind not in _NO_NEXT:
        common["next"] = r.ident
    return {**common, **STEP_FIELDS[kind]}


def accepted_keys() -> dict[str, frozenset[str]]:
    """Every key the validator accepts, by the name of its `$defs` entry in the schema."""
    out = {
        "file": frozenset(FILE_FIELDS),
        "flow": frozenset(FLOW_FIELDS),
        "guards": frozenset(GUARD_FIELDS),
        "quick_reply": frozenset(QUICK_REPLY_FIELDS),
        "button": frozenset(BUTTON_FIELDS),
        "branch_case": frozenset(CASE_FIELDS),
    }
    for t, fields in TRIGGER_FIELDS.items():
        out[f"trigger_{t}"] = frozenset({"type", *fields})
    for s in StepType:
        out[f"step_{s}"] = frozenset(_step_fields(s))
    return out


def _accepted_by(key: str, table: Mapping[Any, Mapping[str, Reader]], what: str) -> str | None:
    kinds = [str(k) for k, fields in table.items() if key in fields]
    return f"only {' and '.join(kinds)} {what}s take it" if kinds else None


def _typed(
    ctx: Ctx, value: Any, path: YamlPath, enum: type[StepType] | type[TriggerType], what: str
) -> Any:
    if not isinstance(value, dict):
        ctx.report(path, f"expected a mapping for the {what}, got {r.describe(value)}")
        return BAD
    if "type" not in value:
        ctx.report(path, f"missing required key 'type' (every {what} names its type)")
        return BAD
    raw = value["type"]
    try:
        return enum(raw)
    except ValueError:
        hint = r.suggest(raw, [m.value for m in enum]) if isinstance(raw, str) else ""
        ctx.report((*path, "type"), f"unknown {what} type {raw!r}{hint}")
        return BAD


def _trigger(ctx: Ctx, value: Any, path: YamlPath) -> Trigger | None:
    kind = _typed(ctx, value, path, TriggerType, "trigger")
    if kind is BAD:
        return None
    fields = {"type": lambda c, v, p: v, **TRIGGER_FIELDS[kind]}
    hints = {
        k: h
        for k in ("keywords", "media", "payload", "ref")
        if (h := _accepted_by(k, TRIGGER_FIELDS, "trigger"))
    }
    required = _TRIGGER_REQUIRED.get(kind, ())
    got = r.mapping(ctx, value, path, fields, required, f"a {kind} trigger", hints)
    if got is None or any(k not in got for k in (*value, *required) if k in fields):
        return None
    mode = got.get("match", MatchMode.WORD)
    kws = got.get("keywords", ())
    if not _keywords_ok(ctx, kws, mode, (*path, "keywords")):
        return None
    return Trigger(
        type=kind,
        keywords=kws,
        match=mode,
        media=got.get("media"),
        include_replies=got.get("include_replies", False),
        live=got.get("live", False),
        payloads=got.get("payload", got.get("ref", ())),
        path=path,
    )


def _step(ctx: Ctx, value: Any, path: YamlPath) -> Step | None:
    kind = _typed(ctx, value, path, StepType, "step")
    if kind is BAD:
        return None
    fields = _step_fields(kind)
    hints = {
        k: h for k in value if k not in fields and (h := _accepted_by(k, STEP_FIELDS, "step"))
    }
    required = ("id", *_STEP_REQUIRED.get(kind, ()))
    got = r.mapping(ctx, value, path, fields, required, f"a {kind} step", hints)
    if got is None or any(k not in got for k in (*value, *required) if k in fields):
        return None
    if kind is ST.SEND and "template" not in got and "image" not in got:
        ctx.report(path, "a send step needs a template, an image, or both")
        return None
    if kind is ST.SEND and "buttons" in got and "template" not in got:
        ctx.report((*path, "buttons"), "buttons need a template: the text shown above them")
        return None
    if kind is ST.SET_FIELD and ("value" in got) == ("from_answer" in got):
        ctx.report(path, "a set_field step takes either value or from_answer")
        return None
    if kind is ST.REQUEST_OPTIN:
        marketing = got.get("kind") is OptInKind.MARKETING
        if marketing and "frequency" not in got:
            ctx.report(path, "a marketing opt-in needs frequency: DAILY, WEEKLY or MONTHLY")
            return None
        if not marketing and "frequency" in got:
            ctx.report(
                (*path, "frequency"), "only marketing opt-ins take a frequency", at_key=True
            )
            return None
    if kind is ST.FOLLOW_UP and got.get("via_token") and "topic" not in got:
        ctx.report((*path, "via_token"), "via_token needs a topic to find the token", at_key=True)
        return None
    if kind in (ST.WAIT_REPLY, ST.COLLECT) and "on_timeout" in got and "timeout" not in got:
        ctx.report((*path, "on_timeout"), "on_timeout needs a timeout", at_key=True)
        return None
    got.pop("type", None)
    return STEP_CLASSES[kind](**got, path=path)


def _flow(ctx: Ctx, value: Any, path: YamlPath) -> Flow | None:
    got = r.mapping(ctx, value, path, FLOW_FIELDS, ("id", "trigger", "steps"), "a flow")
    if got is None:
        return None
    trigger = _trigger(ctx, got["trigger"], (*path, "trigger")) if "trigger" in got else None
    guards = None
    if "guards" in got:
        g = r.mapping(ctx, got["guards"], (*path, "guards"), GUARD_FIELDS, (), "guards")
        guards = (
            None if g is None else Guards(cooldown=g.get("cooldown"), daily_cap=g.get("daily_cap"))
        )
    steps: list[Step | None] = []
    raw_steps = got.get("steps")
    if "steps" in got:
        if not isinstance(raw_steps, list) or not raw_steps:
            ctx.report((*path, "steps"), "expected a list of steps (at least one)")
        else:
            steps = [_step(ctx, s, (*path, "steps", i)) for i, s in enumerate(raw_steps)]
    complete = "id" in got and trigger is not None and steps and all(s is not None for s in steps)
    if not complete or trigger is None or ("guards" in got and guards is None):
        return None
    return Flow(
        id=got["id"],
        trigger=trigger,
        steps=tuple(s for s in steps if s is not None),
        description=got.get("description"),
        priority=got.get("priority", 0),
        enabled=got.get("enabled", True),
        platforms=got.get("platforms", frozenset(Platform)),
        guards=guards or Guards(),
        file=ctx.file,
        path=path,
    )


def read_file(ctx: Ctx) -> list[Flow]:
    """Every valid flow of one parsed file; problems go to `ctx`."""
    data = ctx.loc.data
    for path, _pos in ctx.loc.duplicates:
        ctx.report(path, "duplicate key: the later value would silently win", at_key=True)
    if data is None:
        ctx.report((), "the file is empty; write flows: and a list of flows", severity=WARNING)
        return []
    got = r.mapping(ctx, data, (), FILE_FIELDS, ("flows",), "a flow file")
    if got is None or "flows" not in got:
        return []
    items = got["flows"]
    if not isinstance(items, list):
        ctx.report(("flows",), "expected a list of flows (each item starts with - id: ...)")
        return []
    flows = [_flow(ctx, item, ("flows", i)) for i, item in enumerate(items)]
    return [f for f in flows if f is not None]
