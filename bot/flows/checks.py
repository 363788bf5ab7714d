"""Checks across steps, flows and the policy profile, after each file's shape is valid: step
targets, unreachable steps, steps the platform doesn't allow, limits, follow-ups no basis could
cover, and two flows claiming the same keyword (issue 3, item 6)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import timedelta

from bot.events import OptInKind, Platform
from bot.flows.graph import REPLIED, facts_at, reachable, targets
from bot.flows.match import ANY_MEDIA, Claim, claims
from bot.flows.model import (
    Button,
    Collect,
    Flow,
    FollowUp,
    PrivateReply,
    PublicReply,
    QuickReply,
    RequestOptin,
    SendStep,
    SetFieldStep,
    Step,
    TriggerType,
    WaitReply,
    YamlPath,
)
from bot.flows.problems import Problem, Severity
from bot.flows.readers import suggest
from bot.flows.yamlpos import Located, format_path
from bot.policy import PolicyProfile, format_duration

__all__ = ["check_flows"]

W = Severity.WARNING
_OPTIN_NAMES = {
    OptInKind.ONE_TIME: "one-time notifications",
    OptInKind.MARKETING: "marketing messages",
}


class _Out:
    def __init__(self, locs: Mapping[str, Located]) -> None:
        self.locs = locs
        self.problems: list[Problem] = []

    def where(self, flow: Flow, path: YamlPath, at_key: bool = False) -> str:
        loc = self.locs.get(flow.file)
        pos = (loc.key_pos(path) if at_key else loc.pos(path)) if loc else None
        return f"{flow.file}:{pos.line}:{pos.column}" if pos else flow.file

    def add(
        self,
        flow: Flow,
        path: YamlPath,
        message: str,
        severity: Severity = Severity.ERROR,
        at_key: bool = False,
    ) -> None:
        loc = self.locs.get(flow.file)
        line = col = 1
        if loc is not None:
            pos = loc.key_pos(path) if at_key else loc.pos(path)
            line, col = pos.line, pos.column
        p = Problem(flow.file, line, col, format_path(path), message, severity)
        if p not in self.problems:
            self.problems.append(p)


def _human(d: timedelta) -> str:
    """ "24h", "30h", "2d": how creators write these durations."""
    seconds = int(d.total_seconds())
    if seconds % 86400 == 0 and seconds >= 2 * 86400:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return format_duration(d)


def _names(platforms: Iterable[Platform]) -> str:
    return " and ".join(sorted(str(p) for p in platforms))


def _duplicate_flows(out: _Out, flows: Sequence[Flow]) -> None:
    first: dict[str, Flow] = {}
    for flow in flows:
        other = first.setdefault(flow.id, flow)
        if other is not flow:
            at = out.where(other, (*other.path, "id"))
            out.add(flow, (*flow.path, "id"), f"flow id {flow.id!r} is already used at {at}")


def _steps(out: _Out, flow: Flow) -> None:
    seen: dict[str, Step] = {}
    for step in flow.steps:
        other = seen.setdefault(step.id, step)
        if other is not step:
            at = out.where(flow, (*other.path, "id"))
            out.add(flow, (*step.path, "id"), f"step id {step.id!r} is already used at {at}")
    ids = [s.id for s in flow.steps]
    for step in flow.steps:
        for key, target in targets(step):
            if flow.step(target) is None:
                msg = f"no step {target!r} in flow {flow.id!r}{suggest(target, ids)}"
                out.add(flow, (*step.path, *key), msg)
    live = reachable(flow)
    for step in flow.steps:
        if step.id not in live:
            out.add(
                flow, (*step.path, "id"), f"step {step.id!r} can never run: no step leads to it", W
            )
    is_comment = flow.trigger.type is TriggerType.COMMENT
    for step in flow.steps:
        if isinstance(step, PrivateReply | PublicReply) and not is_comment:
            out.add(
                flow,
                (*step.path, "type"),
                f"a {step.type} step answers the comment that started the flow, and a "
                f"{flow.trigger.type} flow has no comment",
            )


def _answers(out: _Out, flow: Flow) -> None:
    names = {s.answer_name for s in flow.steps if isinstance(s, WaitReply)}
    names |= {s.field_name for s in flow.steps if isinstance(s, Collect)}
    for step in flow.steps:
        if isinstance(step, SetFieldStep) and step.from_answer and step.from_answer not in names:
            msg = f"no wait_reply or collect step saves an answer named {step.from_answer!r}"
            out.add(flow, (*step.path, "from_answer"), msg + suggest(step.from_answer, names))


def _limits(out: _Out, flow: Flow, profile: PolicyProfile) -> None:
    rules = [profile.for_platform(p) for p in sorted(flow.platforms)]
    for step in flow.steps:
        if isinstance(step, PrivateReply | SendStep):
            qr_max = min(r.quick_replies_max for r in rules)
            if len(step.quick_replies) > qr_max:
                out.add(
                    flow,
                    (*step.path, "quick_replies"),
                    f"{len(step.quick_replies)} quick replies; Meta allows at most {qr_max}",
                )
            b_max = min(r.buttons_max for r in rules)
            if len(step.buttons) > b_max:
                out.add(
                    flow,
                    (*step.path, "buttons"),
                    f"{len(step.buttons)} buttons; Meta allows at most {b_max}",
                )
            t_max = min(r.quick_reply_title_max for r in rules)
            titled: tuple[tuple[str, Sequence[QuickReply | Button]], ...] = (
                ("quick_replies", step.quick_replies),
                ("buttons", step.buttons),
            )
            for key, items in titled:
                for i, item in enumerate(items):
                    if len(item.title) > t_max:
                        out.add(
                            flow,
                            (*step.path, key, i, "title"),
                            f"title is {len(item.title)} characters; Meta allows at most {t_max}",
                        )
        if (
            isinstance(step, PrivateReply)
            and Platform.INSTAGRAM in flow.platforms
            and (step.buttons or step.quick_replies)
        ):
            out.add(
                flow,
                (*step.path, "buttons" if step.buttons else "quick_replies"),
                "buttons and quick replies in an Instagram private reply are disputed "
                "(POLICY.md §3): Meta may reject the message; plain text is always safe",
                W,
                at_key=True,
            )
        if isinstance(step, RequestOptin):
            o_max = min(r.optin_title_max for r in rules)
            if len(step.title) > o_max:
                out.add(
                    flow,
                    (*step.path, "title"),
                    f"opt-in title is {len(step.title)} characters; Meta allows at most {o_max}",
                )
            off = [r.platform for r in rules if not r.optin_enabled(step.kind)]
            if off:
                out.add(
                    flow,
                    (*step.path, "kind"),
                    f"{_OPTIN_NAMES[step.kind]} are turned off for {_names(off)} in the policy "
                    f"profile, so this request would never be sent there; limit the flow's "
                    f"platforms or change the profile",
                )


def _optin_routes(
    flows: Sequence[Flow], topic: str, platform: Platform, profile: PolicyProfile
) -> set[OptInKind]:
    rules = profile.for_platform(platform)
    return {
        s.kind
        for f in flows
        if platform in f.platforms
        for s in f.steps
        if isinstance(s, RequestOptin) and s.topic == topic and rules.optin_enabled(s.kind)
    }


def _follow_ups(out: _Out, flow: Flow, flows: Sequence[Flow], profile: PolicyProfile) -> None:
    for step in flow.steps:
        if not isinstance(step, FollowUp):
            continue
        for platform in sorted(flow.platforms):
            window = profile.for_platform(platform).standard_window
            late = step.delay >= window
            if not late and not step.via_token:
                continue
            delay, win = _human(step.delay), _human(window)
            if step.topic is None:
                out.add(
                    flow,
                    (*step.path, "delay"),
                    f"a follow-up {delay} later has no basis on {platform}: the {win} standard "
                    f"window opened by the user's last message has closed by then (only a new "
                    f"message from them reopens it), and without a topic there is no opt-in "
                    f"token to send on (POLICY.md §1); add topic: with a request_optin step for "
                    f"it, or make the delay shorter than {win}",
                )
            elif not _optin_routes(flows, step.topic, platform, profile):
                out.add(
                    flow,
                    (*step.path, "topic"),
                    f"a follow-up {delay} later needs an opt-in token for topic {step.topic!r} "
                    f"on {platform} (the {win} window has closed by then), but no request_optin "
                    f"step asks for that topic with an opt-in kind the profile allows on "
                    f"{platform}",
                )


def _before_reply(out: _Out, flow: Flow) -> None:
    if flow.trigger.type is not TriggerType.COMMENT:
        return
    facts = facts_at(flow)
    for step in flow.steps:
        known = facts.get(step.id)
        if known is None or REPLIED in known:
            continue
        if isinstance(step, SendStep | RequestOptin | Collect):
            out.add(
                flow,
                (*step.path, "type"),
                "this step runs before the commenter has written back; after a comment only "
                "the private reply may be sent (POLICY.md §1), so it is refused unless they "
                "already have an open 24 h window; put a wait_reply before it",
                W,
            )


def _conflicts(out: _Out, flows: Sequence[Flow]) -> None:
    groups: dict[tuple[object, ...], list[tuple[Flow, Claim]]] = defaultdict(list)
    for flow in flows:
        if flow.enabled:
            for c in claims(flow):
                groups[(c.kind, c.live, c.media, c.key, c.platform)].append((flow, c))
    found: dict[tuple[str, int | None, str], list[Platform]] = {}
    info: dict[tuple[str, int | None, str], tuple[Flow, Claim, Flow]] = {}
    for members in groups.values():
        first_flow, first_claim = members[0]
        for flow, c in members[1:]:
            key = (flow.id, c.index, first_flow.id)
            found.setdefault(key, []).append(c.platform)
            info[key] = (flow, c, first_flow)
    for key, platforms in found.items():
        flow, c, other = info[key]
        _conflict(out, flow, c, other, platforms)


def _conflict(out: _Out, flow: Flow, c: Claim, other: Flow, platforms: list[Platform]) -> None:
    t = flow.trigger
    if c.keyword is None:
        what, path = f"every {t.type} event", (*t.path, "type")
    else:
        field = (
            "payload"
            if t.type in (TriggerType.POSTBACK, TriggerType.QUICK_REPLY)
            else ("ref" if t.type is TriggerType.REFERRAL else "keywords")
        )
        what = f"{field[:-1] if field == 'keywords' else field} {c.keyword!r}"
        path = (*t.path, field)
        if c.index is not None and (*path, c.index) in out.locs[flow.file].values:
            path = (*path, c.index)
    media = "any media" if c.media == ANY_MEDIA else f"media {c.media}"
    scope = f" on {media}" if t.type is TriggerType.COMMENT else ""
    at = out.where(other, (*other.trigger.path, "type"))
    if other is flow:
        out.add(flow, path, f"{what} is listed twice", W)
        return
    if other.priority == flow.priority:
        out.add(
            flow,
            path,
            f"{what}{scope} ({_names(platforms)}) is also claimed by flow {other.id!r} ({at}) at "
            f"the same priority; one event starts one flow, so {other.id!r} would win by id "
            f"order: drop one or set priority",
        )
        return
    win, lose = (other, flow) if other.priority > flow.priority else (flow, other)
    out.add(
        flow,
        path,
        f"{what}{scope} ({_names(platforms)}) is also claimed by flow {other.id!r} ({at}); "
        f"{win.id!r} has the higher priority, so {lose.id!r} never starts on it",
        W,
    )


def check_flows(
    flows: Sequence[Flow], locs: Mapping[str, Located], profile: PolicyProfile
) -> Iterator[Problem]:
    """Every problem found across steps and flows (templates are checked separately)."""
    out = _Out(locs)
    _duplicate_flows(out, flows)
    for flow in flows:
        _steps(out, flow)
        _answers(out, flow)
        _limits(out, flow, profile)
        _follow_ups(out, flow, flows, profile)
        _before_reply(out, flow)
    _conflicts(out, flows)
    yield from out.problems
