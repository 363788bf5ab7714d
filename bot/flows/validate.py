"""The flow file format, checked by hand (no jsonschema dependency) with a positioned problem
for every mistake. `flow.schema.json` describes the same keys for editors; a test keeps the
two in step (`accepted_keys`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.events import OptInKind, Platform
from bot.flows import readers as r
from bot.flows.model import Flow, Guards, MatchMode, Step, StepType, Trigger, TriggerType, YamlPath
from bot.flows.problems import Severity
from bot.flows.readers import BAD, Ctx, Reader
from bot.flows.schema import (
    FILE_FIELDS,
    FLOW_FIELDS,
    GUARD_FIELDS,
    STEP_CLASSES,
    STEP_FIELDS,
    STEP_REQUIRED,
    TRIGGER_FIELDS,
    TRIGGER_REQUIRED,
    accepted_keys,
    keywords_ok,
    step_fields,
)

__all__ = ["accepted_keys", "read_file"]

ST = StepType


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
    required = TRIGGER_REQUIRED.get(kind, ())
    got = r.mapping(ctx, value, path, fields, required, f"a {kind} trigger", hints)
    if got is None or any(k not in got for k in (*value, *required) if k in fields):
        return None
    mode = got.get("match", MatchMode.WORD)
    kws = got.get("keywords", ())
    if not keywords_ok(ctx, kws, mode, (*path, "keywords")):
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
    fields = step_fields(kind)
    hints = {
        k: h for k in value if k not in fields and (h := _accepted_by(k, STEP_FIELDS, "step"))
    }
    required = ("id", *STEP_REQUIRED.get(kind, ()))
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
        ctx.report(
            (), "the file is empty; write flows: and a list of flows", severity=Severity.WARNING
        )
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
