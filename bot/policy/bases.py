"""One function per basis (POLICY.md §1 table): is it open for this intent now, and until when?

Each returns `Allowed`, or `Refused` whose `next_possible` is only when *this* reason lifts;
`bot.policy.decide` chains those into the true earliest time. No I/O, no clock: `now` is given.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from bot.events import OptInKind
from bot.policy.decision import (
    HUMAN_AGENT_TAG,
    Allowed,
    BasisKind,
    Content,
    Decision,
    Intent,
    RefusalReason,
    Refused,
)
from bot.policy.profile import PlatformProfile, format_duration
from bot.policy.state import (
    ConversationState,
    MetaRefusal,
    Token,
    frequency_period,
    token_expiry,
)

__all__ = [
    "ad_referral",
    "human_agent",
    "is_awaiting_user_reply",
    "is_unreachable",
    "marketing_message",
    "message_tag",
    "one_time_notification",
    "optin_request",
    "private_reply",
    "standard_window",
]

R = RefusalReason
_DAY = timedelta(days=1)
_WEEK = timedelta(days=7)


def when(t: datetime) -> str:
    """A time as a creator reads it in `bot status` and the send log."""
    return t.strftime("%Y-%m-%d %H:%M UTC")


def closing(until: datetime, now: datetime, p: PlatformProfile) -> bool:
    """Whether a basis open until `until` counts as closed at `now`: `send_margin` early, so
    a send decided at the edge never reaches Meta after it (10/2018278)."""
    return now >= until - p.send_margin


def _early(until: datetime, now: datetime, p: PlatformProfile) -> str:
    """Why a basis that is not closed yet is refused: the margin, in a creator's words."""
    if now >= until:
        return ""
    return f" (the bot stops {format_duration(p.send_margin)} early, so no send lands after it)"


def _closed_at(until: datetime, now: datetime, p: PlatformProfile) -> str:
    """ "closed at X", or within the margin "closes at X (the bot stops 15s early ...)"."""
    verb = "closed" if now >= until else "closes"
    return f"{verb} at {when(until)}{_early(until, now, p)}"


def meta_closed(
    state: ConversationState,
    kind: BasisKind,
    *,
    comment_id: str | None = None,
    token: str | None = None,
) -> MetaRefusal | None:
    """Meta's own "outside the window" for this basis, if it still holds (POLICY.md §5).

    A window Meta closed stays closed until the person writes after Meta's verdict; a
    comment's private reply or an opt-in token Meta refused stays closed for good.
    """
    last = state.last_user_message_at
    found = None
    for r in state.meta_refusals:
        if r.kind != kind.value:
            continue
        if comment_id is not None or token is not None:
            if (r.comment_id, r.token) != (comment_id, token):
                continue
        elif r.comment_id is not None or r.token is not None or (last is not None and last > r.at):
            continue
        if found is None or r.at > found.at:
            found = r
    return found


def _closed_by_meta(r: MetaRefusal, what: str, reopens: bool) -> Refused:
    code = "" if r.code is None else f" (code {r.code}" + (f"/{r.subcode})" if r.subcode else ")")
    after = (
        "; it reopens when the person writes again." if reopens else "; it stays closed for good."
    )
    return Refused(
        R.CLOSED_BY_META,
        f"Meta refused a send on {what} at {when(r.at)} as outside its window{code}{after}",
    )


def is_unreachable(state: ConversationState) -> bool:
    """Meta said the person can't receive messages, and they haven't written since (§5)."""
    since = state.unreachable_since
    last = state.last_user_message_at
    return since is not None and (last is None or last <= since)


def is_awaiting_user_reply(state: ConversationState, now: datetime, p: PlatformProfile) -> bool:
    """A private reply went out and the user hasn't written after it (POLICY.md §1).

    A message the user sent before the private reply went out (it was still queued) opened
    the 24 h window like any message, and a later private reply does not close it: while that
    window is open the conversation is open, unless the profile takes the stricter reading.
    """
    sent = state.last_private_reply_at
    last = state.last_user_message_at
    if sent is None or (last is not None and last > sent):
        return False
    if last is None or p.private_reply_strict:
        return True
    return closing(last + p.standard_window, now, p)


def private_reply(
    state: ConversationState, comment_id: str, now: datetime, p: PlatformProfile
) -> Decision:
    """Exactly one message per comment, within 7 days of it (live: `live_comment_window`)."""
    comment = next((c for c in state.comments if c.comment_id == comment_id), None)
    if comment is None:
        return Refused(
            R.UNKNOWN_COMMENT,
            f"No comment {comment_id} from this person is on record, so there is nothing to "
            "privately reply to.",
        )
    if comment.private_reply_at is not None:
        return Refused(
            R.PRIVATE_REPLY_ALREADY_SENT,
            f"Comment {comment_id} already got its one private reply at "
            f"{when(comment.private_reply_at)}; Meta allows only one per comment.",
        )
    refused = meta_closed(state, BasisKind.PRIVATE_REPLY, comment_id=comment_id)
    if refused is not None:
        return _closed_by_meta(refused, f"comment {comment_id}", reopens=False)
    # A webhook may carry the time it was sent, not the comment's (`comment_time_margin`);
    # a live comment's webhook comes while the broadcast runs, never a day later.
    window = (
        p.live_comment_window if comment.live else p.private_reply_window - p.comment_time_margin
    )
    until = comment.created_at + window
    if closing(until, now, p):
        kind = "live comment" if comment.live else "comment"
        return Refused(
            R.PRIVATE_REPLY_EXPIRED,
            f"The private reply to {kind} {comment_id} had to go by {when(until)}"
            f"{_early(until, now, p)}.",
        )
    return Allowed(
        basis=BasisKind.PRIVATE_REPLY,
        until=until,
        messaging_type="RESPONSE",
        recipient_field="comment_id",
        recipient_value=comment_id,
        comment_id=comment_id,
    )


def standard_window(state: ConversationState, now: datetime, p: PlatformProfile) -> Decision:
    """24 h from the user's latest DM, story reply, postback or referral; anything may go."""
    last = state.last_user_message_at
    if last is None:
        return Refused(
            R.NO_OPEN_BASIS,
            "This person has never messaged the account, so only a private reply to their "
            "comment can reach them.",
        )
    until = last + p.standard_window
    if closing(until, now, p):
        return Refused(
            R.WINDOW_CLOSED,
            f"The 24-hour window {_closed_at(until, now, p)}; it reopens when the person "
            "writes again.",
        )
    refused = meta_closed(state, BasisKind.STANDARD_WINDOW)
    if refused is not None:
        return _closed_by_meta(refused, "the 24-hour window", reopens=True)
    return Allowed(
        basis=BasisKind.STANDARD_WINDOW,
        until=until,
        messaging_type="RESPONSE",
        recipient_field="id",
    )


def ad_referral(state: ConversationState, now: datetime, p: PlatformProfile) -> Allowed | None:
    """The first reply after an ad click, within `ad_referral_window` (off by default)."""
    last = state.last_ad_referral_at
    if p.ad_referral_window is None or last is None:
        return None
    until = last + p.ad_referral_window
    answered = state.last_send_at is not None and state.last_send_at >= last
    if closing(until, now, p) or answered or meta_closed(state, BasisKind.AD_REFERRAL_WINDOW):
        return None
    return Allowed(
        basis=BasisKind.AD_REFERRAL_WINDOW,
        until=until,
        messaging_type="RESPONSE",
        recipient_field="id",
    )


def human_agent(
    state: ConversationState, intent: Intent, now: datetime, p: PlatformProfile
) -> Decision:
    """A human's support reply within 7 days of the user's latest message (never automation)."""
    if not p.human_agent_enabled:
        return Refused(
            R.HUMAN_AGENT_DISABLED,
            "The human-agent tag is switched off for this platform in the policy profile.",
        )
    if intent.content is not Content.SUPPORT:
        return Refused(
            R.HUMAN_AGENT_SUPPORT_ONLY,
            "After the 24-hour window only support replies may go, with the human-agent tag.",
        )
    last = state.last_user_message_at
    if last is None:
        return Refused(
            R.NO_OPEN_BASIS, "This person has never messaged the account, so there is no window."
        )
    until = last + p.human_agent_window
    if closing(until, now, p):
        return Refused(
            R.HUMAN_AGENT_WINDOW_CLOSED,
            f"The 7-day human-agent window {_closed_at(until, now, p)}; it reopens when the "
            "person writes again.",
        )
    refused = meta_closed(state, BasisKind.HUMAN_AGENT)
    if refused is not None:
        return _closed_by_meta(refused, "the human-agent window", reopens=True)
    return Allowed(
        basis=BasisKind.HUMAN_AGENT,
        until=until,
        messaging_type="MESSAGE_TAG",
        tag=HUMAN_AGENT_TAG,
        recipient_field="id",
    )


def message_tag(
    state: ConversationState, intent: Intent, tag: str, now: datetime, p: PlatformProfile
) -> Decision:
    """A non-promotional update under a tag the profile allows, within `tag_window`."""
    if tag not in p.message_tags:
        return Refused(
            R.TAG_NOT_ALLOWED,
            f"The message tag {tag} is not allowed on {p.platform} by the policy profile.",
        )
    if intent.content is Content.PROMOTIONAL:
        return Refused(
            R.PROMOTIONAL_TAG,
            f"Promotional content may never be sent with a message tag ({tag}).",
        )
    last = state.last_user_message_at
    until = None if last is None else last + p.tag_window
    if until is None or closing(until, now, p):
        closed = "" if until is None else f" (it {_closed_at(until, now, p)})"
        return Refused(
            R.TAG_WINDOW_CLOSED,
            f"Message tags may only be used within {p.tag_window.days} days of the person's "
            f"latest message{closed}.",
        )
    refused = meta_closed(state, BasisKind.MESSAGE_TAG)
    if refused is not None:
        return _closed_by_meta(refused, f"the {tag} tag", reopens=True)
    return Allowed(
        basis=BasisKind.MESSAGE_TAG,
        until=until,
        messaging_type="MESSAGE_TAG",
        tag=tag,
        recipient_field="id",
    )


def _disabled(kind: OptInKind, p: PlatformProfile) -> Refused:
    name = "One-time notifications" if kind is OptInKind.ONE_TIME else "Marketing messages"
    return Refused(
        R.OPTIN_KIND_DISABLED, f"{name} are switched off for {p.platform} in the policy profile."
    )


def _tokens(state: ConversationState, kind: OptInKind, topic: str | None) -> list[Token]:
    # A token without a topic can't be matched to any message (opt-ins are topic-specific).
    if topic is None:
        return []
    return [t for t in state.tokens if t.kind is kind and t.topic == topic]


_TOKEN_BASIS = {
    OptInKind.ONE_TIME: BasisKind.ONE_TIME_NOTIFICATION,
    OptInKind.MARKETING: BasisKind.MARKETING_MESSAGE,
}


def _refused_by_meta(state: ConversationState, tokens: list[Token]) -> MetaRefusal | None:
    """Meta's refusal of the last of `tokens` when it refused every one of them."""
    found = [meta_closed(state, _TOKEN_BASIS[t.kind], token=t.token) for t in tokens]
    if not found or any(r is None for r in found):
        return None
    return max((r for r in found if r is not None), key=lambda r: r.at)


def _no_token(kind: OptInKind, topic: str | None) -> Refused:
    name = "one-time notification" if kind is OptInKind.ONE_TIME else "marketing messages"
    about = f"topic {topic!r}" if topic is not None else "a message without a topic"
    return Refused(R.NO_TOKEN, f"This person has not opted in to {name} for {about}.")


def one_time_notification(
    state: ConversationState, topic: str | None, now: datetime, p: PlatformProfile
) -> Decision:
    """One message on an unused, unexpired one-time token for the topic."""
    if not p.one_time_notifications:
        return _disabled(OptInKind.ONE_TIME, p)
    tokens = _tokens(state, OptInKind.ONE_TIME, topic)
    if not tokens:
        return _no_token(OptInKind.ONE_TIME, topic)
    unused = [t for t in tokens if t.used_at is None]
    live = [t for t in unused if not closing(token_expiry(t, p), now, p)]
    usable = sorted(
        (
            t
            for t in live
            if not meta_closed(state, BasisKind.ONE_TIME_NOTIFICATION, token=t.token)
        ),
        key=lambda t: (token_expiry(t, p), t.received_at, t.token),
    )
    if not usable:
        refused = _refused_by_meta(state, live)
        if refused is not None:
            return _closed_by_meta(refused, f"the one-time notification for {topic!r}", False)
        if unused:
            return Refused(
                R.TOKEN_EXPIRED, f"The one-time notification opt-in for {topic!r} has expired."
            )
        return Refused(
            R.TOKEN_USED,
            f"The one-time notification for {topic!r} was already sent; each opt-in allows one.",
        )
    token = usable[0]
    return Allowed(
        basis=BasisKind.ONE_TIME_NOTIFICATION,
        until=token_expiry(token, p),
        messaging_type="UPDATE",
        recipient_field="one_time_notif_token",
        recipient_value=token.token,
        topic=topic,
        token=token.token,
    )


def marketing_message(
    state: ConversationState, topic: str | None, now: datetime, p: PlatformProfile
) -> Decision:
    """A message on a live, not-stopped marketing token, at most one per frequency period."""
    if not p.marketing_messages:
        return _disabled(OptInKind.MARKETING, p)
    tokens = _tokens(state, OptInKind.MARKETING, topic)
    if not tokens:
        return _no_token(OptInKind.MARKETING, topic)
    live = [t for t in tokens if not closing(token_expiry(t, p), now, p)]
    if not live:
        return Refused(
            R.TOKEN_EXPIRED, f"The marketing-messages opt-in for {topic!r} has expired."
        )
    running = [t for t in live if not t.stopped]
    if not running:
        return Refused(R.OPTED_OUT, f"This person stopped marketing messages for {topic!r}.")
    active = [
        t for t in running if not meta_closed(state, BasisKind.MARKETING_MESSAGE, token=t.token)
    ]
    if not active:
        refused = _refused_by_meta(state, running)
        assert refused is not None
        return _closed_by_meta(refused, f"marketing messages on {topic!r}", reopens=False)
    token = max(active, key=lambda t: (t.received_at, t.token))
    # One message per period per topic, across every token for it; if the user opted in more
    # than once, the longest period they chose holds (never more often than they agreed to,
    # and the answer can't change as tokens expire, so `next_possible` stays exact).
    sent = [t.last_sent_at for t in tokens if t.last_sent_at is not None]
    slowest = max(tokens, key=lambda t: frequency_period(t.frequency))
    if sent:
        next_at = max(sent) + frequency_period(slowest.frequency)
        if now < next_at:
            freq = (slowest.frequency or "monthly").lower()
            return Refused(
                R.FREQUENCY_LIMIT,
                f"This person agreed to {freq} messages on {topic!r}; the last went at "
                f"{when(max(sent))}.",
                next_at,
            )
    return Allowed(
        basis=BasisKind.MARKETING_MESSAGE,
        until=token_expiry(token, p),
        messaging_type="UPDATE",
        recipient_field="notification_messages_token",
        recipient_value=token.token,
        topic=topic,
        token=token.token,
    )


def _cap(
    ats: list[datetime], now: datetime, period: timedelta, limit: int | None
) -> datetime | None:
    """When a rolling cap of `limit` per `period` frees a slot, or None if one is free now."""
    if limit is None:
        return None
    recent = sorted(a for a in ats if a > now - period)
    if len(recent) < limit:
        return None
    return recent[len(recent) - limit] + period


def optin_request(
    state: ConversationState, intent: Intent, now: datetime, p: PlatformProfile
) -> Decision:
    """Inside the open 24 h window only, once per (kind, topic) per 7 days, within the caps."""
    kind = intent.optin
    assert kind is not None
    if not p.optin_enabled(kind):
        return _disabled(kind, p)
    window = standard_window(state, now, p)
    if isinstance(window, Refused):
        return Refused(
            R.OPTIN_OUTSIDE_WINDOW,
            "Opt-in requests may only be sent inside the 24-hour window, and it is not open.",
        )
    same = [r.at for r in state.optin_requests if r.kind is kind and r.topic == intent.topic]
    again = _cap(same, now, p.optin_request_cooldown, 1)
    if again is not None:
        return Refused(
            R.OPTIN_REQUESTED_RECENTLY,
            f"This person was already asked about {intent.topic!r} at {when(max(same))}; "
            "Meta allows one request per topic per 7 days.",
            again,
        )
    everything = [r.at for r in state.optin_requests]
    weekly = _cap(everything, now, _WEEK, p.optin_requests_per_week)
    if weekly is not None:
        return Refused(
            R.OPTIN_WEEKLY_LIMIT,
            f"This person already got {p.optin_requests_per_week} opt-in requests this week.",
            weekly,
        )
    daily = _cap(everything, now, _DAY, p.optin_requests_per_day)
    if daily is not None:
        return Refused(
            R.OPTIN_DAILY_LIMIT,
            f"This person already got {p.optin_requests_per_day} opt-in requests today.",
            daily,
        )
    return Allowed(
        basis=BasisKind.STANDARD_WINDOW,
        until=window.until,
        messaging_type="RESPONSE",
        recipient_field="id",
        topic=intent.topic,
        optin=kind,
    )
