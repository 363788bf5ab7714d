"""What the conversation runtime asks the engine to do: the runtime is pure and only returns
these values; the engine writes them (outbox rows, schedules, contact changes) in the same
transaction as the run's new state (DESIGN.md "The data path")."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from bot.policy import Intent

__all__ = [
    "Effect",
    "Handoff",
    "RenderFailed",
    "Schedule",
    "Send",
    "SendKind",
    "SetField",
    "Tag",
]


class SendKind(StrEnum):
    PRIVATE_REPLY = "private_reply"  # recipient {comment_id}; intent.comment_id is set
    MESSAGE = "message"  # a DM on whatever basis policy.decide finds for `intent`
    OPTIN_REQUEST = "optin_request"  # one_time_notif_req / notification_messages attachment
    PUBLIC_REPLY = "public_reply"  # a comment under the user's comment, not a DM


@dataclass(frozen=True, slots=True, kw_only=True)
class Send:
    """One fully rendered message, ready for the outbox.

    `message` is the Send API `message` object (POLICY.md §3): `text` (+ `quick_replies`), or
    an `attachment` (image, button template, opt-in request). For a public reply it is
    `{"text": ...}`, posted to `/{comment_id}/replies` (Instagram) or `/comments` (Facebook);
    public replies need no basis, so `intent` is not given to `policy.decide` for them.
    `delay` asks the outbox not to send before now + delay; `followup` marks a send that a
    `follow_up` step scheduled earlier (policy is asked again when it goes, POLICY.md §1).
    """

    kind: SendKind
    template: str | None
    message: Mapping[str, Any]
    intent: Intent
    flow_id: str
    step_id: str
    delay: timedelta = timedelta(0)
    followup: bool = False
    comment_id: str | None = None


@dataclass(frozen=True, slots=True)
class Schedule:
    """Call `runtime.on_due` for this contact's run of `flow_id` at `at` (a wait times out or a
    follow-up is due). A stale wake-up is harmless: `on_due` ignores a run not due yet."""

    at: datetime
    flow_id: str
    step_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Tag:
    """Add and remove contact tags."""

    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SetField:
    """Set a custom field on the contact (collected emails and phones land here too)."""

    name: str
    value: Any


@dataclass(frozen=True, slots=True)
class Handoff:
    """Hand the conversation to a human: automation stops for this contact until a human
    releases it (`bot.policy.set_handoff`)."""

    reason: str


@dataclass(frozen=True, slots=True)
class RenderFailed:
    """A template failed to render, so its message was not sent, not even partly; the
    operator sees `reason` (issue 3: "Bad input gets")."""

    template: str
    reason: str
    flow_id: str = field(default="")
    step_id: str = field(default="")


Effect = Send | Schedule | Tag | SetField | Handoff | RenderFailed
