"""Conversation state of one contact (account + user) and the pure reducer over events.

Meta delivers events duplicated and out of order (POLICY.md §2), so `apply_event` is built
from order-independent merges: windows keep the latest timestamp, comments and tokens are sets
keyed by id, and a STOP/RESUME is settled by its own timestamp, not by arrival. Applying the
same events in any order gives the same state; a late old event never rewinds a window.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from bot.events import (
    Comment,
    CommentVerb,
    Event,
    Message,
    OptIn,
    OptInKind,
    OptInStatus,
    Platform,
    Referral,
    is_user_initiated,
)
from bot.policy.profile import PlatformProfile, PolicyProfile

__all__ = [
    "CommentBasis",
    "ConversationState",
    "MetaRefusal",
    "OptInRequest",
    "OptInStatusChange",
    "Token",
    "apply_event",
    "frequency_period",
    "later",
    "prune",
    "token_expiry",
]

_FREQUENCIES = {"DAILY": timedelta(days=1), "WEEKLY": timedelta(days=7)}
_LONGEST_PERIOD = timedelta(days=30)
_KEEP_SPENT_TOKENS = timedelta(days=365)
_KEEP_STATUSES = timedelta(days=365)


@dataclass(frozen=True, slots=True)
class CommentBasis:
    """A user's comment: the ground for exactly one private reply (POLICY.md §1)."""

    comment_id: str
    created_at: datetime
    live: bool = False
    private_reply_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Token:
    """A one-time or marketing opt-in token for one topic (POLICY.md §1).

    `status_at` is the timestamp of the STOP/RESUME that set `stopped`, so a late, older one
    cannot undo a newer one.
    """

    kind: OptInKind
    topic: str | None
    token: str
    received_at: datetime
    expires_at: datetime | None = None
    frequency: str | None = None
    stopped: bool = False
    used_at: datetime | None = None
    last_sent_at: datetime | None = None
    status_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class OptInRequest:
    """An opt-in request the bot sent, kept for the 7-day and daily/weekly limits."""

    kind: OptInKind
    topic: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class OptInStatusChange:
    """The latest STOP/RESUME per target, kept so a token that arrives late still honours it.

    The target is `token` when Meta named one, else `topic`, else every marketing token.
    """

    status: OptInStatus
    at: datetime
    token: str | None = None
    topic: str | None = None


@dataclass(frozen=True, slots=True)
class MetaRefusal:
    """Meta refused a send as outside its window (10/2018278 and the like, POLICY.md §5).

    Meta's verdict overrides the bot's own reckoning: the basis (`kind`, a `BasisKind` value)
    stays closed until the person writes again after `at`, or for good when it names a
    comment (`comment_id`) or an opt-in token (`token`), which no message reopens.
    """

    kind: str
    at: datetime
    code: int | None = None
    subcode: int | None = None
    comment_id: str | None = None
    token: str | None = None


@dataclass(frozen=True, slots=True)
class ConversationState:
    """Everything the policy core knows about one contact; the store persists it as a dict."""

    platform: Platform
    last_user_message_at: datetime | None = None
    last_ad_referral_at: datetime | None = None
    last_private_reply_at: datetime | None = None
    # Latest send of any kind the bot recorded: the ad-referral basis allows only the first.
    last_send_at: datetime | None = None
    comments: tuple[CommentBasis, ...] = ()
    tokens: tuple[Token, ...] = ()
    optin_requests: tuple[OptInRequest, ...] = ()
    optin_statuses: tuple[OptInStatusChange, ...] = ()
    unreachable_since: datetime | None = None
    handoff_since: datetime | None = None
    meta_refusals: tuple[MetaRefusal, ...] = ()


def later(a: datetime | None, b: datetime | None) -> datetime | None:
    """The later of two optional times: windows only ever move forward."""
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _earlier(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def frequency_period(frequency: str | None) -> timedelta:
    """How often a marketing token may be used; unknown or missing is read as MONTHLY."""
    return _FREQUENCIES.get((frequency or "").upper(), _LONGEST_PERIOD)


def token_expiry(token: Token, profile: PlatformProfile) -> datetime:
    """When the token stops working; without Meta's expiry, `token_max_age` after receipt."""
    return token.expires_at or token.received_at + profile.token_max_age


def _is_ad_referral(event: Event) -> bool:
    if isinstance(event, Referral):
        return event.ad_id is not None or (event.source or "").upper() == "ADS"
    return isinstance(event, Message) and not event.is_echo and event.referral_ad_id is not None


def _add_comment(
    comments: tuple[CommentBasis, ...], new: CommentBasis
) -> tuple[CommentBasis, ...]:
    """Add by comment_id; duplicates (retries, ad notifications) merge conservatively."""
    by_id = {c.comment_id: c for c in comments}
    old = by_id.get(new.comment_id)
    if old is not None:
        new = CommentBasis(
            comment_id=old.comment_id,
            created_at=min(old.created_at, new.created_at),
            live=old.live or new.live,
            private_reply_at=_earlier(old.private_reply_at, new.private_reply_at),
        )
    by_id[new.comment_id] = new
    return tuple(sorted(by_id.values(), key=lambda c: (c.created_at, c.comment_id)))


def _rank(status: OptInStatus, at: datetime) -> tuple[datetime, int]:
    # The later status wins; at the same instant STOP wins, so the result never depends on
    # arrival order and errs on the user's side.
    return (at, 1 if status is OptInStatus.STOP else 0)


def _record_rank(c: OptInStatusChange) -> tuple[tuple[datetime, int], str, str]:
    return (_rank(c.status, c.at), c.topic or "", c.token or "")


def _targets(change: OptInStatusChange, token: Token) -> bool:
    if token.kind is not OptInKind.MARKETING:
        return False
    if change.token is not None:
        return change.token == token.token
    return change.topic is None or change.topic == token.topic


def _settle(token: Token, changes: tuple[OptInStatusChange, ...]) -> Token:
    """Apply every STOP/RESUME made at or after the opt-in; the highest-ranked one wins."""
    best = None if token.status_at is None else (token.status_at, 1 if token.stopped else 0)
    for change in changes:
        if not _targets(change, token) or change.at < token.received_at:
            continue
        rank = _rank(change.status, change.at)
        if best is None or rank > best:
            best = rank
    if best is None:
        return token
    return replace(token, stopped=best[1] == 1, status_at=best[0])


def _merge_token(old: Token, new: Token) -> Token:
    periods = sorted((old.frequency, new.frequency), key=lambda f: (frequency_period(f), f or ""))
    return replace(
        old,
        kind=min(old.kind, new.kind),
        topic=old.topic if old.topic == new.topic else min((old.topic, new.topic), key=str),
        received_at=min(old.received_at, new.received_at),
        expires_at=_earlier(old.expires_at, new.expires_at),
        frequency=periods[-1],
    )


def _sorted_tokens(tokens: list[Token]) -> tuple[Token, ...]:
    return tuple(sorted(tokens, key=lambda t: (t.received_at, t.token)))


def _add_token(state: ConversationState, event: OptIn) -> ConversationState:
    if event.token is None:
        return state
    new = Token(
        kind=event.kind,
        topic=event.topic,
        token=event.token,
        received_at=event.timestamp,
        expires_at=event.token_expiry,
        frequency=event.frequency if event.kind is OptInKind.MARKETING else None,
    )
    tokens = {t.token: t for t in state.tokens}
    old = tokens.get(new.token)
    merged = new if old is None else _merge_token(old, new)
    tokens[new.token] = _settle(merged, state.optin_statuses)
    return replace(state, tokens=_sorted_tokens(list(tokens.values())))


def _change_key(change: OptInStatusChange) -> tuple[str, str]:
    if change.token is not None:
        return ("token", change.token)
    return ("topic", change.topic) if change.topic is not None else ("all", "")


def _apply_status(state: ConversationState, event: OptIn) -> ConversationState:
    assert event.status is not None
    change = OptInStatusChange(event.status, event.timestamp, event.token, event.topic)
    changes = {_change_key(c): c for c in state.optin_statuses}
    old = changes.get(_change_key(change))
    if old is None or _record_rank(change) > _record_rank(old):
        changes[_change_key(change)] = change
    kept = tuple(sorted(changes.values(), key=_change_key))
    tokens = _sorted_tokens([_settle(t, (change,)) for t in state.tokens])
    return replace(state, optin_statuses=kept, tokens=tokens)


def apply_event(
    state: ConversationState, event: Event, profile: PolicyProfile | PlatformProfile
) -> ConversationState:
    """Fold one event into the state (POLICY.md §1 "what opens a window"), order-independently.

    User-initiated events (DMs, story replies and mentions, quick replies, postbacks,
    referrals) move the standard window; ad referrals also the ad-referral window; a user's
    new comment adds a private-reply basis; an opt-in adds a token; STOP/RESUME settle marketing
    tokens. Echoes, reads, reactions, deleted messages and opt-ins never open a window.
    `profile` is accepted so platform rules can shape state; today none do.
    """
    if event.platform is not state.platform:
        raise ValueError(f"a {event.platform} event cannot change a {state.platform} contact")
    ts = event.timestamp
    if is_user_initiated(event):
        state = replace(state, last_user_message_at=later(state.last_user_message_at, ts))
        if state.unreachable_since is not None and ts > state.unreachable_since:
            # They wrote to us after a send failed: they are reachable again.
            state = replace(state, unreachable_since=None)
    if _is_ad_referral(event):
        state = replace(state, last_ad_referral_at=later(state.last_ad_referral_at, ts))
    if isinstance(event, Comment) and event.verb is CommentVerb.ADD and not event.is_own:
        # Edits, hides and removals neither open nor close the basis: only a new comment does.
        basis = CommentBasis(event.comment_id, ts, live=event.live)
        state = replace(state, comments=_add_comment(state.comments, basis))
    if isinstance(event, OptIn):
        state = _add_token(state, event) if event.status is None else _apply_status(state, event)
    return state


def prune(
    state: ConversationState, now: datetime, profile: PolicyProfile | PlatformProfile
) -> ConversationState:
    """Drop what can no longer matter, so state stays bounded.

    Comments are kept a day past the longest private-reply window, spent tokens a year (so a
    re-delivered opt-in webhook can't bring a used token back), opt-in requests a day past
    the cooldown, STOP/RESUME records a year, Meta's refusals while they still close something.
    """
    p = profile if isinstance(profile, PlatformProfile) else profile.for_platform(state.platform)
    day = timedelta(days=1)
    comment_horizon = now - (max(p.private_reply_window, p.live_comment_window) + day)
    request_horizon = now - (max(p.optin_request_cooldown, timedelta(days=7)) + day)
    spent_horizon = now - _KEEP_SPENT_TOKENS

    def keep_token(t: Token) -> bool:
        if t.used_at is not None and t.used_at < spent_horizon:
            return False
        return token_expiry(t, p) >= spent_horizon

    comments = tuple(c for c in state.comments if c.created_at >= comment_horizon)
    tokens = tuple(t for t in state.tokens if keep_token(t))
    comment_ids = {c.comment_id for c in comments}
    token_ids = {t.token for t in tokens}

    def keep_refusal(r: MetaRefusal) -> bool:
        if r.comment_id is not None:
            return r.comment_id in comment_ids
        if r.token is not None:
            return r.token in token_ids
        # A window Meta closed reopens with the person's next message: then it says nothing.
        last = state.last_user_message_at
        return last is None or r.at >= last

    return replace(
        state,
        comments=comments,
        tokens=tokens,
        optin_requests=tuple(r for r in state.optin_requests if r.at >= request_horizon),
        optin_statuses=tuple(c for c in state.optin_statuses if c.at >= now - _KEEP_STATUSES),
        meta_refusals=tuple(r for r in state.meta_refusals if keep_refusal(r)),
    )
