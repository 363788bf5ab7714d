"""What the policy core is asked (`Intent`) and what it answers (`Allowed` / `Refused`).

Every send names its basis and every refusal names its reason and when a basis could next exist
(DESIGN.md "The words"; POLICY.md §1).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal

from bot.events import OptInKind

__all__ = [
    "HUMAN_AGENT_TAG",
    "Allowed",
    "Author",
    "BasisKind",
    "Content",
    "Decision",
    "Intent",
    "MessagingType",
    "OpenBasis",
    "RecipientField",
    "Refused",
    "RefusalReason",
]

HUMAN_AGENT_TAG = "HUMAN_AGENT"

MessagingType = Literal["RESPONSE", "UPDATE", "MESSAGE_TAG"]
RecipientField = Literal["id", "comment_id", "one_time_notif_token", "notification_messages_token"]


class Author(StrEnum):
    """Who writes the message: Meta treats automation and humans differently (HUMAN_AGENT)."""

    AUTOMATION = "automation"
    HUMAN = "human"


class Content(StrEnum):
    """What the message is, because bases restrict content (POLICY.md §1 table)."""

    PROMOTIONAL = "promotional"
    SUPPORT = "support"
    # Transactional / tag-eligible: receipts, shipping, event and account updates.
    NON_PROMOTIONAL = "non_promotional"
    OPTIN_REQUEST = "optin_request"


class BasisKind(StrEnum):
    PRIVATE_REPLY = "private_reply"
    STANDARD_WINDOW = "standard_window"
    HUMAN_AGENT = "human_agent"
    ONE_TIME_NOTIFICATION = "one_time_notification"
    MARKETING_MESSAGE = "marketing_message"
    MESSAGE_TAG = "message_tag"
    AD_REFERRAL_WINDOW = "ad_referral_window"


class RefusalReason(StrEnum):
    NO_OPEN_BASIS = "no_open_basis"
    WINDOW_CLOSED = "window_closed"
    PRIVATE_REPLY_ALREADY_SENT = "private_reply_already_sent"
    PRIVATE_REPLY_EXPIRED = "private_reply_expired"
    UNKNOWN_COMMENT = "unknown_comment"
    AWAITING_USER_REPLY = "awaiting_user_reply"
    HUMAN_AGENT_NOT_FOR_AUTOMATION = "human_agent_not_for_automation"
    HUMAN_AGENT_WINDOW_CLOSED = "human_agent_window_closed"
    HUMAN_AGENT_SUPPORT_ONLY = "human_agent_support_only"
    HUMAN_AGENT_DISABLED = "human_agent_disabled"
    OPTIN_OUTSIDE_WINDOW = "optin_outside_window"
    OPTIN_REQUESTED_RECENTLY = "optin_requested_recently"
    OPTIN_DAILY_LIMIT = "optin_daily_limit"
    OPTIN_WEEKLY_LIMIT = "optin_weekly_limit"
    OPTIN_KIND_DISABLED = "optin_kind_disabled"
    NO_TOKEN = "no_token"
    TOKEN_USED = "token_used"
    TOKEN_EXPIRED = "token_expired"
    OPTED_OUT = "opted_out"
    FREQUENCY_LIMIT = "frequency_limit"
    TAG_NOT_ALLOWED = "tag_not_allowed"
    PROMOTIONAL_TAG = "promotional_tag"
    TAG_WINDOW_CLOSED = "tag_window_closed"
    CONTACT_UNREACHABLE = "contact_unreachable"
    HUMAN_HANDOFF = "human_handoff"
    CLOSED_BY_META = "closed_by_meta"


@dataclass(frozen=True, slots=True, kw_only=True)
class Intent:
    """A send someone wants to make; `decide` finds the basis for it or says why not.

    Routes: `comment_id` asks for the private reply to that comment; `optin` asks to send an
    opt-in request of that kind for `topic`; `via_token` asks for a send on the user's opt-in
    token for `topic`; otherwise the core picks (standard window first). `tag` permits a message
    tag as a fallback (and `HUMAN_AGENT` asks for the human-agent tag, humans only).
    `handover` marks the message a hand-over step itself sends ("connecting you to a
    person"): the one automated message that still goes once a human has the contact.
    """

    author: Author = Author.AUTOMATION
    content: Content = Content.PROMOTIONAL
    comment_id: str | None = None
    optin: OptInKind | None = None
    topic: str | None = None
    tag: str | None = None
    via_token: OptInKind | None = None
    handover: bool = False

    def __post_init__(self) -> None:
        if (self.optin is not None) != (self.content is Content.OPTIN_REQUEST):
            raise ValueError("an opt-in request needs both optin=<kind> and content=OPTIN_REQUEST")
        routes = [
            name
            for name, value in (
                ("comment_id", self.comment_id),
                ("optin", self.optin),
                ("via_token", self.via_token),
            )
            if value is not None
        ]
        if len(routes) > 1:
            raise ValueError(f"an intent takes one route, got {' and '.join(routes)}")
        if self.tag is not None and routes:
            raise ValueError(f"a message tag cannot be combined with {routes[0]}")

    @classmethod
    def optin_request(
        cls, kind: OptInKind, topic: str | None, author: Author = Author.AUTOMATION
    ) -> Intent:
        """The intent to ask the user for a one-time or marketing opt-in on `topic`."""
        return cls(author=author, content=Content.OPTIN_REQUEST, optin=kind, topic=topic)


@dataclass(frozen=True, slots=True, kw_only=True)
class Allowed:
    """The send may go now on `basis`, until `until` (when that basis closes).

    `recipient_field`/`recipient_value` are the Send API recipient (POLICY.md §3); a None value
    means the contact's user id. `optin` is set when the send is an opt-in request, so
    `record_send` can count it against the cooldowns.
    """

    basis: BasisKind
    until: datetime
    messaging_type: MessagingType
    recipient_field: RecipientField
    tag: str | None = None
    recipient_value: str | None = None
    comment_id: str | None = None
    topic: str | None = None
    token: str | None = None
    optin: OptInKind | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """The send may not go; `detail` says why in a creator's words.

    `next_possible` is the earliest time the same intent would be allowed if nothing else
    happens; None when only the user (or a human handing back) can open a basis again.
    """

    reason: RefusalReason
    detail: str
    next_possible: datetime | None = None


Decision = Allowed | Refused


@dataclass(frozen=True, slots=True)
class OpenBasis:
    """A basis open now, and until when (for `bot status`, the scheduler, explanations)."""

    kind: BasisKind
    until: datetime
    comment_id: str | None = None
    topic: str | None = None
