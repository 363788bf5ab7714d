"""Template checks for `bot check`: unreadable files, syntax errors, missing templates, and
each use rendered with sample data under StrictUndefined for every platform the flow runs on,
so undefined names and over-limit texts show up before a user ever triggers them. Each use is
rendered once more with hostile data (every text a user writes 1,000 characters long) under
the same budget the daemon renders with, so a template whose cost a commenter decides (a loop
over the comment's text inside `{% if comment.text|length > 30 %}`) is refused here, not
found out when a long comment arrives (the untrusted-input issue, item 7)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from jinja2 import nodes

from bot.flows.context import sample_context
from bot.flows.graph import REPLIED, facts_at
from bot.flows.messages import BUTTON_TEXT_MAX
from bot.flows.model import Collect, Flow, FollowUp, PrivateReply, PublicReply, SendStep, YamlPath
from bot.flows.problems import Problem, Severity
from bot.flows.readers import suggest
from bot.flows.yamlpos import Located, format_path
from bot.policy import PolicyProfile
from bot.templates import TemplateFailure, TemplateSet

__all__ = ["Use", "check_templates", "uses"]


@dataclass(frozen=True, slots=True)
class Use:
    """One place a flow step names a template."""

    flow: Flow
    step_id: str
    path: YamlPath
    name: str
    facts: frozenset[str]
    topic: str | None = None
    check_limit: bool = True
    buttons: bool = False


def uses(flow: Flow) -> Iterator[Use]:
    """Every template a reachable step of `flow` renders, with what is known there."""
    facts = facts_at(flow)
    for step in flow.steps:
        known = facts.get(step.id)
        if known is None:
            continue  # unreachable: reported as such, never rendered
        p = step.path
        if isinstance(step, PrivateReply | SendStep | FollowUp) and step.template is not None:
            topic = step.topic if isinstance(step, FollowUp) else None
            buttons = isinstance(step, PrivateReply | SendStep) and bool(step.buttons)
            path = (*p, "template")
            yield Use(flow, step.id, path, step.template, known, topic, buttons=buttons)
        elif isinstance(step, Collect):
            yield Use(flow, step.id, (*p, "template"), step.template, known)
            if step.retry_template is not None:
                retry = known | {REPLIED}
                yield Use(flow, step.id, (*p, "retry_template"), step.retry_template, retry)
        elif isinstance(step, PublicReply):
            # A public reply is a comment, not a DM: the DM text limits don't apply to it.
            for i, name in enumerate(step.templates):
                path = (*p, "templates", i)
                yield Use(flow, step.id, path, name, known, check_limit=False)


# Spaces and line breaks too: `indent` and `wordwrap` cost per line and per word.
HOSTILE_TEXT: Final = ("Hostile sample text,\nlong as a comment can be. " * 30)[:1000]
# What a user decides: their words and profile. The rest (flow, account, topic) is the bot's.
_USER_PARTS: Final = ("comment", "message", "answers", "contact")


def _hostile(value: Any) -> Any:
    if isinstance(value, str):
        return HOSTILE_TEXT
    if isinstance(value, Mapping):
        return {k: _hostile(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_hostile(v) for v in value]
    return value


def hostile_context(ctx: Mapping[str, Any]) -> dict[str, Any]:
    """`ctx` with every text a user wrote or chose replaced by `HOSTILE_TEXT`."""
    return {k: _hostile(v) if k in _USER_PARTS else v for k, v in ctx.items()}


def _at(locs: Mapping[str, Located], flow: Flow, path: YamlPath) -> tuple[int, int]:
    loc = locs.get(flow.file)
    if loc is None:
        return 1, 1
    pos = loc.pos(path)
    return pos.line, pos.column


def check_templates(
    templates: TemplateSet,
    unreadable: Mapping[str, str],
    templates_dir: str,
    flows: Sequence[Flow],
    locs: Mapping[str, Located],
    profile: PolicyProfile,
) -> list[Problem]:
    out: list[Problem] = []
    for name, reason in sorted(unreadable.items()):
        file = f"{templates_dir.rstrip('/')}/{name}"
        out.append(Problem(file, 0, 0, name, f"cannot read: {reason}"))
    broken: set[str] = set()
    for name in sorted(templates.names):
        failure = templates.compile_error(name)
        if failure is not None:
            broken.add(name)
            line, col = templates.locate(failure)
            out.append(Problem(templates.file_of(name), line, col, name, failure.reason))
    for name in sorted(templates.names - broken):
        out.extend(_user_loops(templates, name))
    seen: set[tuple[str, str]] = set()
    for flow in flows:
        for use in uses(flow):
            line, col = _at(locs, flow, use.path)
            where = format_path(use.path)
            if use.name not in templates.names and use.name not in unreadable:
                hint = suggest(use.name, templates.names)
                msg = f"no template {use.name!r} in {templates_dir}{hint}"
                out.append(Problem(flow.file, line, col, where, msg))
                continue
            if use.name in broken or use.name in unreadable:
                continue
            for platform in sorted(flow.platforms):
                ctx = sample_context(flow, platform, use.facts, use.topic)
                try:
                    text = templates.render(
                        use.name, ctx, profile.for_platform(platform), check_limit=use.check_limit
                    ).text
                    if use.buttons and len(text) > BUTTON_TEXT_MAX:
                        msg = (
                            f"template {use.name!r} renders to {len(text)} characters with "
                            f"sample data; a message with buttons allows {BUTTON_TEXT_MAX}"
                        )
                        out.append(Problem(flow.file, line, col, where, msg))
                except TemplateFailure as f:
                    if f.reason.startswith("renders to"):
                        msg = f"template {use.name!r} {f.reason}, with sample data on {platform}"
                        out.append(Problem(flow.file, line, col, where, msg))
                        continue
                    if (use.name, f.reason) in seen:
                        continue
                    seen.add((use.name, f.reason))
                    t_line, t_col = templates.locate(f)
                    msg = (
                        f"{f.reason} (rendered with sample data for flow {flow.id!r} step "
                        f"{use.step_id!r} at {flow.file}:{line}:{col})"
                    )
                    out.append(Problem(templates.file_of(use.name), t_line, t_col, use.name, msg))
                    continue
                if (use.name, "budget") in seen:
                    continue
                try:
                    hostile = hostile_context(ctx)
                    rules = profile.for_platform(platform)
                    templates.render(use.name, hostile, rules, check_limit=False)
                except TemplateFailure as f:
                    if f.over_budget:  # other failures on made-up texts prove nothing
                        seen.add((use.name, "budget"))
                        out.append(_over_budget(templates, use, f, line, col))
    return out


# Variables holding what users wrote: a loop over them runs as often as a user decides.
_USER_TEXT: Final = frozenset({"comment", "message", "answers"})


def _user_loops(templates: TemplateSet, name: str) -> Iterator[Problem]:
    """A warning for each loop whose length a user's text decides, seen in the template's
    source: the hostile render only tries one shape of text."""
    for loop in templates.syntax_tree(name).find_all(nodes.For):
        names = [*loop.iter.find_all(nodes.Name)]
        if isinstance(loop.iter, nodes.Name):
            names.append(loop.iter)
        used = sorted(_USER_TEXT.intersection(n.name for n in names))
        if used:
            yield Problem(
                templates.file_of(name),
                loop.lineno,
                1,
                name,
                f"this loop runs once per item of what a user wrote ({', '.join(used)}); each "
                "turn costs one of the render's 10,000 steps, and a message over budget is not "
                "sent: loop over a fixed list, or shorten the text first (|truncate(100))",
                Severity.WARNING,
            )


def _over_budget(
    templates: TemplateSet, use: Use, f: TemplateFailure, line: int, col: int
) -> Problem:
    t_line, t_col = templates.locate(f)
    msg = (
        f"{f.reason} when a user's texts are 1,000 characters long (flow {use.flow.id!r} step "
        f"{use.step_id!r} at {use.flow.file}:{line}:{col}); the message would not be sent. "
        "A commenter decides how much work this is: loop over fixed lists, or shorten the "
        "text first (comment.text|truncate(100))"
    )
    return Problem(templates.file_of(use.name), t_line, t_col, use.name, msg)
