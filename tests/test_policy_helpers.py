"""Event and state builders shared by the policy tests (no tests here; plain functions)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from bot.clock import utc
from bot.events import (
    Attachment,
    Comment,
    Event,
    Message,
    OptIn,
    OptInKind,
    OptInStatus,
    Platform,
    Postback,
    Reaction,
    Read,
    Referral,
)
from bot.policy import ConversationState, PolicyProfile, apply_event, default_profile

ACCOUNT = "acct"
USER = "user-1"
T0 = utc(2026, 3, 2, 9, 0, 0, 381_907)

_keys = itertools.count()


def _base(platform: Platform, at: datetime, user: str | None = USER) -> dict[str, Any]:
    return {
        "platform": platform,
        "account_id": ACCOUNT,
        "user_id": user,
        "timestamp": at,
        "key": f"k{next(_keys)}",
    }


def dm(at: datetime, platform: Platform = Platform.INSTAGRAM, **kw: Any) -> Message:
    return Message(**_base(platform, at), mid=f"m{next(_keys)}", text="hi", **kw)


def echo(at: datetime, platform: Platform = Platform.INSTAGRAM) -> Message:
    base = _base(platform, at, user=USER)
    return Message(**base, mid=f"m{next(_keys)}", text="ours", is_echo=True)


def deleted(at: datetime, platform: Platform = Platform.INSTAGRAM) -> Message:
    return Message(**_base(platform, at), mid=f"m{next(_keys)}", is_deleted=True)


def story_reply(at: datetime, platform: Platform = Platform.INSTAGRAM) -> Message:
    return Message(**_base(platform, at), mid=f"m{next(_keys)}", reply_to_story_id="s1")


def story_mention(at: datetime, platform: Platform = Platform.INSTAGRAM) -> Message:
    mention = (Attachment(type="story_mention", url="https://cdn/x"),)
    return Message(**_base(platform, at), mid=f"m{next(_keys)}", attachments=mention)


def quick_reply(at: datetime, platform: Platform = Platform.INSTAGRAM) -> Message:
    return Message(**_base(platform, at), mid=f"m{next(_keys)}", quick_reply_payload="YES")


def postback(at: datetime, platform: Platform = Platform.INSTAGRAM) -> Postback:
    return Postback(**_base(platform, at), payload="START")


def referral(at: datetime, platform: Platform = Platform.INSTAGRAM, ad: bool = False) -> Referral:
    return Referral(**_base(platform, at), ref="r", source="ADS" if ad else "SHORTLINK")


def read(at: datetime, platform: Platform = Platform.INSTAGRAM) -> Read:
    return Read(**_base(platform, at), mid="m0")


def reaction(at: datetime, platform: Platform = Platform.INSTAGRAM) -> Reaction:
    return Reaction(**_base(platform, at), mid="m0", action="react", reaction="love")


def comment(
    at: datetime,
    comment_id: str = "c1",
    platform: Platform = Platform.INSTAGRAM,
    *,
    live: bool = False,
    own: bool = False,
) -> Comment:
    base = _base(platform, at, user=ACCOUNT if own else USER)
    return Comment(**base, comment_id=comment_id, text="PRICING", live=live)


def optin(
    at: datetime,
    topic: str | None = "sale",
    token: str | None = "tok-1",
    kind: OptInKind = OptInKind.MARKETING,
    platform: Platform = Platform.INSTAGRAM,
    *,
    frequency: str | None = "DAILY",
    expiry: datetime | None = None,
    status: OptInStatus | None = None,
) -> OptIn:
    return OptIn(
        **_base(platform, at),
        kind=kind,
        topic=topic,
        token=token,
        status=status,
        frequency=frequency if kind is OptInKind.MARKETING else None,
        token_expiry=expiry,
    )


def one_time(at: datetime, topic: str = "restock", token: str = "otn-1", **kw: Any) -> OptIn:
    return optin(at, topic, token, OptInKind.ONE_TIME, **kw)


def stop(
    at: datetime,
    topic: str | None = "sale",
    token: str | None = None,
    platform: Platform = Platform.INSTAGRAM,
) -> OptIn:
    return optin(at, topic, token, platform=platform, status=OptInStatus.STOP, frequency=None)


def resume(
    at: datetime,
    topic: str | None = "sale",
    token: str | None = None,
    platform: Platform = Platform.INSTAGRAM,
) -> OptIn:
    return optin(at, topic, token, platform=platform, status=OptInStatus.RESUME, frequency=None)


def state_of(
    events: Iterable[Event],
    platform: Platform = Platform.INSTAGRAM,
    profile: PolicyProfile | None = None,
) -> ConversationState:
    state = ConversationState(platform=platform)
    for event in events:
        state = apply_event(state, event, profile or default_profile())
    return state
