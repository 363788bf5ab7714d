"""The flow format as frozen dataclasses: what a creator's YAML means once it is validated.

Flows reference their steps by id (never by position), so a reloaded flow keeps conversations
that are under way working as long as the step they wait on still exists (issue 3, item 7).
Where a value came from (file, YAML path) rides along, uncompared, so checks can point at it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import ClassVar

from bot.events import OptInKind, Platform
from bot.policy import Content

__all__ = [
    "Branch",
    "BranchCase",
    "Button",
    "Collect",
    "CollectKind",
    "End",
    "Flow",
    "FollowUp",
    "Goto",
    "Guards",
    "HandoffStep",
    "MatchMode",
    "PrivateReply",
    "PublicReply",
    "QuickReply",
    "RequestOptin",
    "SendStep",
    "SetFieldStep",
    "Step",
    "StepType",
    "TagStep",
    "Trigger",
    "TriggerType",
    "UntagStep",
    "WaitReply",
    "YamlPath",
]

YamlPath = tuple[str | int, ...]


class TriggerType(StrEnum):
    COMMENT = "comment"
    STORY_REPLY = "story_reply"
    STORY_MENTION = "story_mention"
    DM = "dm"
    POSTBACK = "postback"
    QUICK_REPLY = "quick_reply"
    REFERRAL = "referral"


class MatchMode(StrEnum):
    """How a trigger's keywords match the text (docs/flows.md "Matching")."""

    WORD = "word"  # one whole word
    PHRASE = "phrase"  # consecutive whole words
    ANY = "any"  # a substring, inside words too
    REGEX = "regex"  # a Python regular expression over the folded text


class StepType(StrEnum):
    PRIVATE_REPLY = "private_reply"
    PUBLIC_REPLY = "public_reply"
    SEND = "send"
    WAIT_REPLY = "wait_reply"
    BRANCH = "branch"
    COLLECT = "collect"
    TAG = "tag"
    UNTAG = "untag"
    SET_FIELD = "set_field"
    REQUEST_OPTIN = "request_optin"
    FOLLOW_UP = "follow_up"
    HANDOFF = "handoff"
    GOTO = "goto"
    END = "end"


class CollectKind(StrEnum):
    EMAIL = "email"
    PHONE = "phone"


@dataclass(frozen=True, slots=True, kw_only=True)
class Trigger:
    """What starts a flow. `media` None means any post or reel; `payloads` holds postback and
    quick-reply payloads or referral refs (matched exactly: they are machine strings)."""

    type: TriggerType
    keywords: tuple[str, ...] = ()
    match: MatchMode = MatchMode.WORD
    media: tuple[str, ...] | None = None
    include_replies: bool = False
    live: bool = False
    payloads: tuple[str, ...] = ()
    path: YamlPath = field(default=(), compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Guards:
    """Per-user limits; ignoring the account's own comments and handling a comment once are
    always on (POLICY.md §1, §2) and so have no field."""

    cooldown: timedelta | None = None
    daily_cap: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class QuickReply:
    title: str
    payload: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Button:
    """A URL button (`url`) or a postback button (`payload`); exactly one is set."""

    title: str
    url: str | None = None
    payload: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class _Step:
    id: str
    next: str | None = None
    path: YamlPath = field(default=(), compare=False)
    type: ClassVar[StepType]


@dataclass(frozen=True, slots=True, kw_only=True)
class PrivateReply(_Step):
    type: ClassVar[StepType] = StepType.PRIVATE_REPLY
    template: str
    content: Content = Content.PROMOTIONAL
    quick_replies: tuple[QuickReply, ...] = ()
    buttons: tuple[Button, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class PublicReply(_Step):
    """Variants so the account doesn't post the same text under every comment."""

    type: ClassVar[StepType] = StepType.PUBLIC_REPLY
    templates: tuple[str, ...]
    delay: timedelta = timedelta(0)


@dataclass(frozen=True, slots=True, kw_only=True)
class SendStep(_Step):
    type: ClassVar[StepType] = StepType.SEND
    template: str | None = None
    content: Content = Content.PROMOTIONAL
    quick_replies: tuple[QuickReply, ...] = ()
    buttons: tuple[Button, ...] = ()
    image: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WaitReply(_Step):
    type: ClassVar[StepType] = StepType.WAIT_REPLY
    timeout: timedelta
    on_timeout: str | None = None
    save_as: str | None = None

    @property
    def answer_name(self) -> str:
        return self.save_as or self.id


@dataclass(frozen=True, slots=True, kw_only=True)
class BranchCase:
    """Go to `goto` when the reply's quick-reply payload is one of `payloads` or its text
    matches one of `keywords`."""

    goto: str
    payloads: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    match: MatchMode = MatchMode.WORD


@dataclass(frozen=True, slots=True, kw_only=True)
class Branch(_Step):
    type: ClassVar[StepType] = StepType.BRANCH
    cases: tuple[BranchCase, ...]
    default: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Collect(_Step):
    type: ClassVar[StepType] = StepType.COLLECT
    kind: CollectKind
    template: str
    retry_template: str | None = None
    max_attempts: int = 3
    field: str | None = None
    timeout: timedelta | None = None
    on_timeout: str | None = None
    on_fail: str | None = None

    @property
    def field_name(self) -> str:
        return self.field or self.kind.value


@dataclass(frozen=True, slots=True, kw_only=True)
class TagStep(_Step):
    type: ClassVar[StepType] = StepType.TAG
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class UntagStep(_Step):
    type: ClassVar[StepType] = StepType.UNTAG
    tags: tuple[str, ...]


FieldValue = str | int | float | bool | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SetFieldStep(_Step):
    """Set a contact field to a literal `value`, or to an answer the run collected."""

    type: ClassVar[StepType] = StepType.SET_FIELD
    field: str
    value: FieldValue = None
    from_answer: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestOptin(_Step):
    type: ClassVar[StepType] = StepType.REQUEST_OPTIN
    kind: OptInKind
    topic: str
    title: str
    frequency: str | None = None  # DAILY | WEEKLY | MONTHLY, marketing only


@dataclass(frozen=True, slots=True, kw_only=True)
class FollowUp(_Step):
    """A message `delay` later; with `topic` it may go on that topic's opt-in token once the
    24 h window has closed (POLICY.md §1: a follow-up needs a basis when it fires)."""

    type: ClassVar[StepType] = StepType.FOLLOW_UP
    delay: timedelta
    template: str
    topic: str | None = None
    via_token: bool = False
    content: Content = Content.PROMOTIONAL


@dataclass(frozen=True, slots=True, kw_only=True)
class HandoffStep(_Step):
    type: ClassVar[StepType] = StepType.HANDOFF
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Goto(_Step):
    type: ClassVar[StepType] = StepType.GOTO
    to: str


@dataclass(frozen=True, slots=True, kw_only=True)
class End(_Step):
    type: ClassVar[StepType] = StepType.END


Step = (
    PrivateReply
    | PublicReply
    | SendStep
    | WaitReply
    | Branch
    | Collect
    | TagStep
    | UntagStep
    | SetFieldStep
    | RequestOptin
    | FollowUp
    | HandoffStep
    | Goto
    | End
)

# Steps after which the run never falls through to the next step in the list.
TERMINAL = frozenset({StepType.HANDOFF, StepType.GOTO, StepType.END})


@dataclass(frozen=True, slots=True, kw_only=True)
class Flow:
    id: str
    trigger: Trigger
    steps: tuple[Step, ...]
    description: str | None = None
    priority: int = 0
    enabled: bool = True
    platforms: frozenset[Platform] = frozenset(Platform)
    guards: Guards = field(default_factory=Guards)
    file: str = field(default="", compare=False)
    path: YamlPath = field(default=(), compare=False)
    _by_id: Mapping[str, Step] = field(init=False, compare=False, repr=False)
    _order: Mapping[str, int] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {s.id: s for s in self.steps})
        object.__setattr__(self, "_order", {s.id: i for i, s in enumerate(self.steps)})

    def step(self, step_id: str) -> Step | None:
        return self._by_id.get(step_id)

    def following(self, step: Step) -> str | None:
        """Where the run goes after `step` when nothing else says: `next:`, else the step
        below it in the list, else the end of the flow."""
        if step.next is not None:
            return step.next
        if step.type in TERMINAL:
            return None
        i = self._order.get(step.id)
        if i is None or i + 1 >= len(self.steps):
            return None
        return self.steps[i + 1].id
