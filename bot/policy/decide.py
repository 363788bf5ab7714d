"""`decide`: may this send go now, on which basis, until when; or why not and until when not.

The gates come first (POLICY.md §1, §5): an unreachable contact gets nothing; during a human
handoff automation waits; automation never uses HUMAN_AGENT; after a private reply only other
private replies go until the user writes. Then the intent's route, or, without one, the bases
in order of preference: standard window, ad-referral window, a token for the topic (marketing,
then one-time), the human-agent tag (humans only), a requested message tag.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from bot.events import OptInKind
from bot.policy import bases
from bot.policy.bases import when
from bot.policy.decision import (
    HUMAN_AGENT_TAG,
    Allowed,
    Author,
    BasisKind,
    Content,
    Decision,
    Intent,
    OpenBasis,
    RefusalReason,
    Refused,
)
from bot.policy.profile import PlatformProfile, PolicyProfile
from bot.policy.state import ConversationState

__all__ = ["deadline", "decide", "open_bases"]

R = RefusalReason
# Each step of the search for `next_possible` lifts one reason; a handful always suffices
# (cooldown, weekly cap, daily cap, frequency) before a reason only the user can lift.
_MAX_STEPS = 8


def _rules(profile: PolicyProfile | PlatformProfile, state: ConversationState) -> PlatformProfile:
    if isinstance(profile, PolicyProfile):
        return profile.for_platform(state.platform)
    if profile.platform is not state.platform:
        raise ValueError(f"{profile.platform} rules given for a {state.platform} contact")
    return profile


def _aware(now: datetime) -> None:
    if now.tzinfo is None:
        raise ValueError("`now` must be an aware UTC datetime")


def _gates(
    state: ConversationState, intent: Intent, now: datetime, p: PlatformProfile
) -> Refused | None:
    """Refusals that hold whatever the route, and that no amount of waiting lifts."""
    if bases.is_unreachable(state):
        return Refused(
            R.CONTACT_UNREACHABLE,
            "Meta said this person isn't receiving messages; nothing is sent until they write.",
        )
    if intent.author is Author.AUTOMATION:
        if state.handoff_since is not None and not intent.handover:
            return Refused(
                R.HUMAN_HANDOFF,
                f"A human took this conversation over at {when(state.handoff_since)}; "
                "automation waits until they hand it back.",
            )
        if intent.tag == HUMAN_AGENT_TAG:
            return Refused(
                R.HUMAN_AGENT_NOT_FOR_AUTOMATION,
                "The human-agent tag is for messages a person writes; Meta forbids it for "
                "automation.",
            )
    if intent.comment_id is None and bases.is_awaiting_user_reply(state, now, p):
        assert state.last_private_reply_at is not None
        return Refused(
            R.AWAITING_USER_REPLY,
            f"A private reply went to this person at {when(state.last_private_reply_at)}; "
            "nothing else may be sent until they write back.",
        )
    return None


def _candidates(
    state: ConversationState, intent: Intent, now: datetime, p: PlatformProfile
) -> list[tuple[int, Decision]]:
    """Every basis a route-less intent could use, best first.

    Each comes with the weight its refusal gets when all of them refuse: what the intent asked
    for (a tag) says most, then a token for its topic, then the human-agent window, then the
    plain windows. A human's support reply takes the human-agent tag before any token, so it
    never spends the user's one-time notification.
    """
    out: list[tuple[int, Decision]] = [(0, bases.standard_window(state, now, p))]
    ad = bases.ad_referral(state, now, p)
    if ad is not None:
        out.append((0, ad))
    wants_agent = intent.tag == HUMAN_AGENT_TAG
    if intent.author is Author.HUMAN and (wants_agent or intent.content is Content.SUPPORT):
        out.append((3 if wants_agent else 1, bases.human_agent(state, intent, now, p)))
    if intent.topic is not None:
        for kind, fn in (
            (OptInKind.MARKETING, bases.marketing_message),
            (OptInKind.ONE_TIME, bases.one_time_notification),
        ):
            has = any(t.kind is kind and t.topic == intent.topic for t in state.tokens)
            if has and p.optin_enabled(kind):
                out.append((2, fn(state, intent.topic, now, p)))
    if intent.tag is not None and not wants_agent:
        out.append((3, bases.message_tag(state, intent, intent.tag, now, p)))
    return out


def _evaluate(
    state: ConversationState, intent: Intent, now: datetime, p: PlatformProfile
) -> Decision:
    """The decision at `now`; a refusal's `next_possible` is when its own reason lifts."""
    gate = _gates(state, intent, now, p)
    if gate is not None:
        return gate
    if intent.comment_id is not None:
        return bases.private_reply(state, intent.comment_id, now, p)
    if intent.optin is not None:
        return bases.optin_request(state, intent, now, p)
    if intent.via_token is OptInKind.ONE_TIME:
        return bases.one_time_notification(state, intent.topic, now, p)
    if intent.via_token is OptInKind.MARKETING:
        return bases.marketing_message(state, intent.topic, now, p)
    candidates = _candidates(state, intent, now, p)
    for _, decision in candidates:
        if isinstance(decision, Allowed):
            return decision
    refusals = [(prio, d) for prio, d in candidates if isinstance(d, Refused)]
    timed = [d for _, d in refusals if d.next_possible is not None]
    if timed:
        return min(timed, key=lambda d: d.next_possible or now)
    return max(refusals, key=lambda pd: pd[0])[1]


def _next_possible(
    state: ConversationState, intent: Intent, refused: Refused, p: PlatformProfile
) -> datetime | None:
    """Walk forward through lifting reasons to the first time the intent is allowed."""
    t = refused.next_possible
    for _ in range(_MAX_STEPS):
        if t is None:
            return None
        later = _evaluate(state, intent, t, p)
        if isinstance(later, Allowed):
            return t
        if later.next_possible is None or later.next_possible <= t:
            return None
        t = later.next_possible
    return None


def decide(
    state: ConversationState,
    intent: Intent,
    now: datetime,
    profile: PolicyProfile | PlatformProfile,
) -> Decision:
    """Allowed (with basis, deadline and recipient) or Refused (with reason and next time).

    Pure: the same state, intent and `now` always give the same answer. Callers ask again at
    the moment of sending (POLICY.md §1: a queued or scheduled send needs a basis when it
    fires), and record what they sent with `record_send`.
    """
    p = _rules(profile, state)
    _aware(now)
    decision = _evaluate(state, intent, now, p)
    if isinstance(decision, Allowed):
        return decision
    nxt = _next_possible(state, intent, decision, p)
    detail = decision.detail
    if nxt is not None:
        detail = f"{detail} It could go from {when(nxt)}."
    return replace(decision, detail=detail, next_possible=nxt)


def deadline(
    state: ConversationState,
    intent: Intent,
    now: datetime,
    profile: PolicyProfile | PlatformProfile,
) -> datetime | None:
    """When the basis the intent would use now closes; None when it can't go now."""
    decision = decide(state, intent, now, profile)
    return decision.until if isinstance(decision, Allowed) else None


def open_bases(
    state: ConversationState, now: datetime, profile: PolicyProfile | PlatformProfile
) -> list[OpenBasis]:
    """Every basis on which something could be sent now, and until when.

    HUMAN_AGENT is listed while open even though only a human may use it; during a handoff
    the bases stay listed because the human can still use them.
    """
    p = _rules(profile, state)
    _aware(now)
    if bases.is_unreachable(state):
        return []
    out: list[OpenBasis] = []
    for comment in state.comments:
        reply = bases.private_reply(state, comment.comment_id, now, p)
        if isinstance(reply, Allowed):
            out.append(
                OpenBasis(BasisKind.PRIVATE_REPLY, reply.until, comment_id=comment.comment_id)
            )
    if bases.is_awaiting_user_reply(state, now, p):
        return out
    support = Intent(author=Author.HUMAN, content=Content.SUPPORT)
    for decision in (
        bases.standard_window(state, now, p),
        bases.ad_referral(state, now, p),
        bases.human_agent(state, support, now, p),
    ):
        if isinstance(decision, Allowed):
            out.append(OpenBasis(decision.basis, decision.until))
    for topic in sorted({t.topic for t in state.tokens if t.topic is not None}):
        for token_basis in (
            bases.marketing_message(state, topic, now, p),
            bases.one_time_notification(state, topic, now, p),
        ):
            if isinstance(token_basis, Allowed):
                out.append(OpenBasis(token_basis.basis, token_basis.until, topic=topic))
    update = Intent(content=Content.NON_PROMOTIONAL)
    for tag in sorted(p.message_tags)[:1]:
        tagged = bases.message_tag(state, update, tag, now, p)
        if isinstance(tagged, Allowed):
            out.append(OpenBasis(BasisKind.MESSAGE_TAG, tagged.until))
    return out
