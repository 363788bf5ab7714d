"""The conversation runtime's data: one run per (contact, flow), what the runtime is told about
the contact and its history, and what it answers. All plain values; runs round-trip through
JSON so the store persists them and a restart resumes them (issue 3, item 8)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from bot.events import Platform
from bot.flows.effects import Effect

__all__ = ["ContactView", "GuardHistory", "Outcome", "RunState", "Waiting"]


class Waiting(StrEnum):
    REPLY = "reply"  # a wait_reply or collect step waits for the user's answer
    FOLLOWUP = "followup"  # a follow_up step waits for its delay


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse_time(value: Any) -> datetime | None:
    if value is None:
        return None
    t = datetime.fromisoformat(str(value))
    if t.tzinfo is None:
        raise ValueError(f"run time {value!r} has no time zone")
    return t


@dataclass(frozen=True, slots=True, kw_only=True)
class RunState:
    """Where one contact is in one flow. Steps are named by id, so a reload that keeps the
    step keeps the run working.

    `trigger` holds what started the run (kind, and comment_id, media_id, text, payload when
    known). `replied` says the user has written since (or a message started the run);
    `last_text`/`last_payload` are their latest words, which a `branch` looks at.
    """

    flow_id: str
    step_id: str
    started_at: datetime
    waiting_for: Waiting | None = None
    wait_until: datetime | None = None
    attempts: int = 0
    answers: Mapping[str, str] = field(default_factory=dict)
    trigger: Mapping[str, str] = field(default_factory=dict)
    replied: bool = False
    last_text: str | None = None
    last_payload: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "flow_id": self.flow_id,
            "step_id": self.step_id,
            "started_at": _time(self.started_at),
            "waiting_for": None if self.waiting_for is None else str(self.waiting_for),
            "wait_until": _time(self.wait_until),
            "attempts": self.attempts,
            "answers": dict(self.answers),
            "trigger": dict(self.trigger),
            "replied": self.replied,
            "last_text": self.last_text,
            "last_payload": self.last_payload,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunState:
        """Inverse of `to_dict`; raises ValueError or KeyError on a malformed record."""
        started = _parse_time(data["started_at"])
        if started is None:
            raise ValueError("a run needs started_at")
        waiting = data.get("waiting_for")
        return cls(
            flow_id=str(data["flow_id"]),
            step_id=str(data["step_id"]),
            started_at=started,
            waiting_for=None if waiting is None else Waiting(waiting),
            wait_until=_parse_time(data.get("wait_until")),
            attempts=int(data.get("attempts", 0)),
            answers={str(k): str(v) for k, v in dict(data.get("answers") or {}).items()},
            trigger={str(k): str(v) for k, v in dict(data.get("trigger") or {}).items()},
            replied=bool(data.get("replied", False)),
            last_text=data.get("last_text"),
            last_payload=data.get("last_payload"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ContactView:
    """What the runtime knows about the contact (and the account it is a contact of).

    `user_id` is None when Meta left the commenter out (POLICY.md §2): per-user guards then
    can't apply. `handoff` is True while a human has the conversation.
    """

    user_id: str | None
    platform: Platform
    username: str | None = None
    name: str | None = None
    tags: frozenset[str] = frozenset()
    fields: Mapping[str, Any] = field(default_factory=dict)
    account_id: str = ""
    account_name: str | None = None
    handoff: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardHistory:
    """The per-user history guards need, supplied by the caller from the store.

    `starts_today` counts starts of each flow for this user in the 24 h before now (rolling,
    so no time zone is involved); `handled_comments` are comment ids already handled (a
    retried webhook or a restart must never handle one twice, POLICY.md §1).
    """

    last_started: Mapping[str, datetime] = field(default_factory=dict)
    starts_today: Mapping[str, int] = field(default_factory=dict)
    handled_comments: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Outcome:
    """The run's new state (None: the flow finished), what to do, and why (for the log).

    `flow_id` names the flow even when the run finished with no effect (a `wait_reply` timing
    out with no `on_timeout`), so the engine can delete the finished run and record the start.
    """

    flow_id: str
    run: RunState | None
    effects: tuple[Effect, ...] = ()
    notes: tuple[str, ...] = ()
    # False when a waiting run could not take the user's event (its flow or step is gone, or
    # after a reload the step no longer waits): the engine then matches the event as new,
    # so no stale run swallows what the user writes.
    consumed: bool = True
