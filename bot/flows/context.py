"""The variables a template sees, built from plain values in one place, so what `bot check`
renders with sample data has exactly the shape the runtime renders with (docs/flows.md
"Templates")."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bot.events import Platform
from bot.flows.graph import REPLIED
from bot.flows.model import Flow, TriggerType

__all__ = ["SAMPLE", "sample_context", "template_context"]


def _first(name: str | None) -> str | None:
    return name.split()[0] if name and name.strip() else None


def template_context(
    *,
    flow: Flow,
    platform: Platform,
    account_id: str,
    account_name: str | None,
    username: str | None,
    name: str | None,
    tags: Iterable[str],
    fields: Mapping[str, Any],
    answers: Mapping[str, Any],
    comment: Mapping[str, Any] | None,
    message: Mapping[str, Any] | None,
    topic: str | None,
) -> dict[str, Any]:
    """Plain dicts only (DESIGN.md house style): nothing a template touches leads elsewhere.

    `comment` is there when a comment started the run; `message` when a message started it or
    the user has answered since; `topic` when the step names one. Missing ones are undefined,
    and templates fail on undefined names rather than send a hole.
    """
    ctx: dict[str, Any] = {
        "contact": {
            "username": username,
            "name": name,
            "first_name": _first(name),
            "tags": sorted(tags),
            "fields": dict(fields),
        },
        "flow": {"id": flow.id, "description": flow.description},
        "account": {"id": account_id, "name": account_name, "platform": str(platform)},
        "answers": dict(answers),
    }
    if comment is not None:
        ctx["comment"] = dict(comment)
    if message is not None:
        ctx["message"] = dict(message)
    if topic is not None:
        ctx["topic"] = topic
    return ctx


SAMPLE = "sample"


def sample_context(
    flow: Flow, platform: Platform, facts: frozenset[str], topic: str | None
) -> dict[str, Any]:
    """What `bot check` renders each template with: sample values for exactly the variables
    that are certain to exist when the step runs (`bot.flows.graph.facts_at`)."""
    answers = {f.split(":", 1)[1]: "sample answer" for f in facts if f.startswith("answer:")}
    fields = {f.split(":", 1)[1]: "sample value" for f in facts if f.startswith("field:")}
    is_comment = flow.trigger.type is TriggerType.COMMENT
    return template_context(
        flow=flow,
        platform=platform,
        account_id="17841400000000000",
        account_name="sample_account",
        username="sample_user",
        name="Sam Sample",
        tags=["sample"],
        fields=fields,
        answers=answers,
        comment=(
            {"id": "sample-comment", "text": "sample comment", "media_id": "sample-media"}
            if is_comment
            else None
        ),
        message={"text": "sample message", "payload": None} if REPLIED in facts else None,
        topic=topic,
    )
