"""Which keys each part of a flow file accepts and how each value is read: the hand-written
twin of `flow.schema.json` (editors use that; `bot check` uses this). A test keeps the two in
step through `accepted_keys`."""

from __future__ import annotations

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
    FollowUp,
    Goto,
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
    TriggerType,
    UntagStep,
    WaitReply,
    YamlPath,
)
from bot.flows.normalize import joined, words
from bot.flows.readers import BAD, Ctx, Reader
from bot.flows.regex import RegexRefused
from bot.flows.regex import keyword as regex_keyword
from bot.policy import Content

__all__ = [
    "FLOW_FIELDS",
    "GUARD_FIELDS",
    "STEP_CLASSES",
    "STEP_FIELDS",
    "STEP_REQUIRED",
    "TRIGGER_FIELDS",
    "TRIGGER_REQUIRED",
    "accepted_keys",
    "keywords_ok",
    "step_fields",
]

T, ST = TriggerType, StepType

_CONTENT = r.enum_choice(Content, exclude=[Content.OPTIN_REQUEST])
_MATCH = r.enum_choice(MatchMode)
_OPTIN = r.choice({"marketing": OptInKind.MARKETING, "one_time": OptInKind.ONE_TIME})
_FREQUENCY = r.choice({"DAILY": "DAILY", "WEEKLY": "WEEKLY", "MONTHLY": "MONTHLY"}, upper=True)
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


def keywords_ok(ctx: Ctx, kws: tuple[str, ...], mode: MatchMode, path: YamlPath) -> bool:
    ok = True
    for i, kw in enumerate(kws):
        at = (*path, i) if (*path, i) in ctx.loc.values else path
        if mode is MatchMode.REGEX:
            try:
                regex_keyword(kw)
            except RegexRefused as exc:
                ctx.report(at, exc.reason)
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
        if not keywords_ok(ctx, kws, mode, (*path, i, "keywords")):
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
TRIGGER_REQUIRED = {T.POSTBACK: ("payload",), T.QUICK_REPLY: ("payload",), T.REFERRAL: ("ref",)}

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
STEP_REQUIRED: Mapping[StepType, tuple[str, ...]] = {
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


def step_fields(kind: StepType) -> dict[str, Reader]:
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
        out[f"step_{s}"] = frozenset(step_fields(s))
    return out
