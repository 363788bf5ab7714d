"""A flow as a graph of step ids: where each step can go, what is reachable, and what is known
for certain when a step runs (has the user written back? which answers and fields are set?).

`bot check` uses the last one to render templates with exactly the variables they will have,
and to warn about sends reached before a commenter has replied (POLICY.md §1: after a comment
only the private reply may go until the user writes).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from bot.flows.model import (
    Branch,
    Collect,
    Flow,
    Goto,
    SetFieldStep,
    Step,
    TriggerType,
    WaitReply,
    YamlPath,
)

__all__ = ["REPLIED", "Edge", "edges", "facts_at", "reachable", "targets"]

# The fact "the user has written (a DM, or a reply to this run)": `message` is in the context.
REPLIED = "message"


@dataclass(frozen=True, slots=True)
class Edge:
    """`key` is the YAML key naming the target (None for falling through to the next step);
    `replied` says the edge is taken because the user answered; `sets` are facts it adds."""

    target: str | None
    key: YamlPath | None
    replied: bool = False
    sets: frozenset[str] = frozenset()


def targets(step: Step) -> Iterator[tuple[YamlPath, str]]:
    """Every step id `step` names explicitly, with the key that names it."""
    if step.next is not None:
        yield ("next",), step.next
    if isinstance(step, Goto):
        yield ("to",), step.to
    if isinstance(step, WaitReply | Collect) and step.on_timeout is not None:
        yield ("on_timeout",), step.on_timeout
    if isinstance(step, Collect) and step.on_fail is not None:
        yield ("on_fail",), step.on_fail
    if isinstance(step, Branch):
        for i, case in enumerate(step.cases):
            yield ("cases", i, "goto"), case.goto
        if step.default is not None:
            yield ("default",), step.default


def edges(flow: Flow, step: Step) -> list[Edge]:
    """Where the run can go after `step` (a None target ends the flow)."""
    after = flow.following(step)
    if isinstance(step, Goto):
        return [Edge(step.to, ("to",))]
    if isinstance(step, Branch):
        out = [Edge(c.goto, ("cases", i, "goto")) for i, c in enumerate(step.cases)]
        return [*out, Edge(step.default or after, ("default",) if step.default else None)]
    if isinstance(step, WaitReply):
        got = frozenset({REPLIED, f"answer:{step.answer_name}"})
        out = [Edge(after, ("next",) if step.next else None, True, got)]
        if step.on_timeout is not None:
            out.append(Edge(step.on_timeout, ("on_timeout",)))
        return out
    if isinstance(step, Collect):
        got = frozenset({REPLIED, f"answer:{step.field_name}", f"field:{step.field_name}"})
        out = [
            Edge(after, ("next",) if step.next else None, True, got),
            Edge(step.on_fail, ("on_fail",), True, frozenset({REPLIED})),
        ]
        if step.on_timeout is not None:
            out.append(Edge(step.on_timeout, ("on_timeout",)))
        return out
    sets = frozenset({f"field:{step.field}"}) if isinstance(step, SetFieldStep) else frozenset()
    return [Edge(after, ("next",) if step.next else None, sets=sets)]


def reachable(flow: Flow) -> set[str]:
    """Step ids reachable from the first step (unknown targets are ignored here)."""
    if not flow.steps:
        return set()
    seen = {flow.steps[0].id}
    todo = [flow.steps[0]]
    while todo:
        step = todo.pop()
        for edge in edges(flow, step):
            nxt = flow.step(edge.target) if edge.target is not None else None
            if nxt is not None and nxt.id not in seen:
                seen.add(nxt.id)
                todo.append(nxt)
    return seen


def facts_at(flow: Flow) -> dict[str, frozenset[str]]:
    """For each reachable step, the facts true on every path to it (a "must" analysis)."""
    if not flow.steps:
        return {}
    first = flow.steps[0].id
    initial = frozenset() if flow.trigger.type is TriggerType.COMMENT else frozenset({REPLIED})
    known: dict[str, frozenset[str]] = {first: initial}
    changed = True
    while changed:
        changed = False
        for step in flow.steps:
            here = known.get(step.id)
            if here is None:
                continue
            for edge in edges(flow, step):
                if edge.target is None or flow.step(edge.target) is None:
                    continue
                out = here | edge.sets
                old = known.get(edge.target)
                new = out if old is None else old & out
                if edge.target == first:
                    new = new & initial
                if new != old:
                    known[edge.target] = new
                    changed = True
    return known
