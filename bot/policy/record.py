"""Pure helpers that record what the bot did, so the next decision knows it (POLICY.md §1).

The engine/sender calls `record_send` with the `Allowed` it acted on, in the same transaction
as the send log, so a restart can never produce a second private reply or reuse a one-time
token.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from bot.policy.decision import Allowed, BasisKind
from bot.policy.state import (
    CommentBasis,
    ConversationState,
    MetaRefusal,
    OptInRequest,
    Token,
    later,
)

__all__ = ["mark_unreachable", "record_meta_refusal", "record_send", "set_handoff"]


def _first(a: datetime | None, at: datetime) -> datetime:
    return at if a is None else min(a, at)


def record_send(state: ConversationState, allowed: Allowed, at: datetime) -> ConversationState:
    """Record a send made on `allowed` at `at`.

    A private reply spends its comment and starts the "nothing else until the user writes"
    rule; a one-time token is spent; a marketing token starts its frequency period; an opt-in
    request starts its 7-day cooldown.
    """
    state = replace(state, last_send_at=later(state.last_send_at, at))
    if allowed.basis is BasisKind.PRIVATE_REPLY and allowed.comment_id is not None:

        def spend(c: CommentBasis) -> CommentBasis:
            if c.comment_id != allowed.comment_id:
                return c
            return replace(c, private_reply_at=_first(c.private_reply_at, at))

        state = replace(
            state,
            comments=tuple(spend(c) for c in state.comments),
            last_private_reply_at=later(state.last_private_reply_at, at),
        )
    elif allowed.token is not None and allowed.basis in (
        BasisKind.ONE_TIME_NOTIFICATION,
        BasisKind.MARKETING_MESSAGE,
    ):
        one_time = allowed.basis is BasisKind.ONE_TIME_NOTIFICATION

        def use(t: Token) -> Token:
            if t.token != allowed.token:
                return t
            if one_time:
                return replace(t, used_at=_first(t.used_at, at))
            return replace(t, last_sent_at=later(t.last_sent_at, at))

        state = replace(state, tokens=tuple(use(t) for t in state.tokens))
    if allowed.optin is not None:
        request = OptInRequest(allowed.optin, allowed.topic, at)
        if request not in state.optin_requests:
            requests = sorted(
                (*state.optin_requests, request), key=lambda r: (r.at, r.kind, r.topic or "")
            )
            state = replace(state, optin_requests=tuple(requests))
    return state


def mark_unreachable(state: ConversationState, at: datetime) -> ConversationState:
    """Meta said the person isn't receiving messages (POLICY.md §5): stop until they write."""
    return replace(state, unreachable_since=later(state.unreachable_since, at))


def set_handoff(state: ConversationState, at: datetime | None) -> ConversationState:
    """A human took the conversation over (`at`) or handed it back (None): automation waits."""
    return replace(state, handoff_since=at)


def record_meta_refusal(
    state: ConversationState,
    allowed: Allowed,
    at: datetime,
    code: int | None = None,
    subcode: int | None = None,
) -> ConversationState:
    """Meta refused a send made on `allowed` as outside its window (POLICY.md §5): Meta's
    verdict closes that basis, so no other queued send on it is tried and refused too.

    A window reopens when the person writes after `at`; a comment's private reply and an
    opt-in token stay closed.
    """
    comment_id = allowed.comment_id if allowed.basis is BasisKind.PRIVATE_REPLY else None
    token = allowed.token if allowed.basis in _TOKEN_BASES else None
    refusal = MetaRefusal(allowed.basis.value, at, code, subcode, comment_id, token)
    if refusal in state.meta_refusals:
        return state
    refusals = sorted((*state.meta_refusals, refusal), key=lambda r: (r.at, r.kind))
    return replace(state, meta_refusals=tuple(refusals))


_TOKEN_BASES = (BasisKind.ONE_TIME_NOTIFICATION, BasisKind.MARKETING_MESSAGE)
