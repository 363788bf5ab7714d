"""The records the model keeps: accounts, contacts (account + user), comments, tokens, profiles.

Plain mutable dataclasses; the rules that read them live in `decide.py` (POLICY.md §1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bot.events import OptInKind, Platform

__all__ = ["CommentRecord", "Contact", "OptinSent", "Profile", "SimAccount", "Token"]


@dataclass(frozen=True, slots=True)
class SimAccount:
    id: str
    platform: Platform
    token: str = field(repr=False)


@dataclass(slots=True)
class OptinSent:
    kind: str
    topic: str
    title: str
    at: datetime


@dataclass(slots=True)
class Contact:
    """One user as seen by one account."""

    first_user_message: datetime | None = None
    last_user_message: datetime | None = None
    last_private_reply: datetime | None = None
    optin_requests: list[OptinSent] = field(default_factory=list)

    def awaiting_reply(self, now: datetime, window: timedelta, strict: bool = False) -> bool:
        """A private reply went out and the user has not written since (POLICY.md §1).

        A message the user wrote before the private reply went out opened the 24 h window
        like any message, and the private reply does not close it (POLICY.md §1); `strict`
        is the stricter reading, where only a message after the private reply counts.
        """
        if self.last_private_reply is None:
            return False
        last = self.last_user_message
        if last is not None and last > self.last_private_reply:
            return False
        return last is None or strict or now - last >= window


@dataclass(slots=True)
class CommentRecord:
    id: str
    account_id: str
    user_id: str
    media_id: str
    text: str
    created_at: datetime
    live: bool = False
    parent_id: str | None = None
    private_replied_at: datetime | None = None


@dataclass(slots=True)
class Token:
    value: str
    kind: OptInKind
    account_id: str
    user_id: str
    topic: str
    created_at: datetime
    expires_at: datetime
    frequency: str | None = None
    used_at: datetime | None = None
    last_sent: datetime | None = None
    stopped: bool = False


@dataclass(slots=True)
class Profile:
    user_id: str
    username: str
    name: str
    follows_business: bool = False
    business_follows_user: bool = False
    follower_count: int = 0
    is_verified_user: bool = False
