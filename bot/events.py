"""Typed events: one item of a webhook delivery (DESIGN.md "The words").

Every event carries the account it arrived for, the contact (`user_id`, None when Meta left the
sender out, POLICY.md §2), its own timestamp (events are ordered by it, never by arrival) and a
`key` that is the same for every copy Meta sends of it, so duplicates are dropped by key.

The parser (`parse_delivery`) lives in `bot.delivery`; this module only defines the shapes, so
that the policy core can depend on them without pulling in parsing code.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

__all__ = [
    "Attachment",
    "Comment",
    "CommentVerb",
    "Event",
    "Message",
    "OptIn",
    "OptInKind",
    "OptInStatus",
    "Platform",
    "Postback",
    "Reaction",
    "Read",
    "Referral",
    "Unknown",
    "is_user_initiated",
]


class Platform(StrEnum):
    INSTAGRAM = "instagram"
    MESSENGER = "messenger"


class CommentVerb(StrEnum):
    ADD = "add"
    EDITED = "edited"
    REMOVE = "remove"
    HIDE = "hide"
    UNHIDE = "unhide"


class OptInKind(StrEnum):
    ONE_TIME = "one_time_notif_req"
    MARKETING = "notification_messages"


class OptInStatus(StrEnum):
    """`notification_messages_status`; absent on the opt-in itself."""

    STOP = "STOP_NOTIFICATIONS"
    RESUME = "RESUME_NOTIFICATIONS"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Base:
    platform: Platform
    account_id: str
    user_id: str | None
    timestamp: datetime
    key: str
    # True when the item came in `standby[]`: another app owns the thread, so the bot records
    # what it means for the windows but must not answer.
    standby: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Comment(_Base):
    """A comment on a post, reel, ad, live video (Instagram) or a Page post (Messenger)."""

    comment_id: str
    text: str
    media_id: str | None = None
    parent_id: str | None = None
    live: bool = False
    verb: CommentVerb = CommentVerb.ADD
    username: str | None = None
    media_product_type: str | None = None
    ad_id: str | None = None
    post_id: str | None = None

    @property
    def is_own(self) -> bool:
        """The account's own comment (its public replies come back as webhooks too)."""
        return self.user_id is not None and self.user_id == self.account_id


@dataclass(frozen=True, slots=True)
class Attachment:
    type: str
    url: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Message(_Base):
    """A DM, quick-reply tap, story reply or story mention; or an echo of the account's own."""

    mid: str
    text: str | None = None
    quick_reply_payload: str | None = None
    reply_to_story_id: str | None = None
    reply_to_story_url: str | None = None
    reply_to_mid: str | None = None
    attachments: tuple[Attachment, ...] = ()
    referral_ref: str | None = None
    referral_ad_id: str | None = None
    is_echo: bool = False
    is_deleted: bool = False
    is_unsupported: bool = False
    # An echo's `metadata`: what the bot's own send carried (its outbox id), so the echo is
    # matched to that send by id.
    metadata: str | None = None

    @property
    def is_story_mention(self) -> bool:
        return any(a.type == "story_mention" for a in self.attachments)

    @property
    def is_story_reply(self) -> bool:
        return self.reply_to_story_id is not None or self.reply_to_story_url is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class Postback(_Base):
    """A button or icebreaker tap."""

    payload: str
    title: str | None = None
    mid: str | None = None
    referral_ref: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Referral(_Base):
    """An ig.me / m.me link or an ad click that opened an existing thread."""

    ref: str | None = None
    source: str | None = None
    type: str | None = None
    ad_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Reaction(_Base):
    mid: str
    action: str  # "react" | "unreact"
    reaction: str | None = None
    emoji: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Read(_Base):
    mid: str | None = None
    watermark: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OptIn(_Base):
    """The user accepted an opt-in request, or stopped / resumed marketing messages.

    `topic` is the request's `payload`: the bot sends its topic id there when it asks, so the
    token comes back keyed by topic (POLICY.md §1: opt-ins are topic-specific).
    """

    kind: OptInKind
    topic: str | None
    token: str | None = None
    status: OptInStatus | None = None
    frequency: str | None = None  # DAILY | WEEKLY | MONTHLY
    token_expiry: datetime | None = None
    title: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Unknown(_Base):
    """An item of a shape or field the bot does not know: kept and ignored, never a crash."""

    reason: str
    field: str | None = None


Event = Comment | Message | Postback | Referral | Reaction | Read | OptIn | Unknown


def is_user_initiated(event: Event) -> bool:
    """Whether the event opens or resets the 24 h standard window (POLICY.md §1).

    DMs, story replies and mentions, quick replies, postbacks and referrals do; echoes, deleted
    messages, reactions, reads, opt-ins and comments do not (a comment opens only the
    private-reply basis for itself).
    """
    if isinstance(event, Message):
        return not event.is_echo and not event.is_deleted
    return isinstance(event, Postback | Referral)
