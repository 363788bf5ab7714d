"""Hypothesis over random histories, held to the separate oracle in test_policy_oracle.py.

Histories mix comments, DMs, echoes, story replies and mentions, quick replies, postbacks,
referrals, reads, reactions, deletions, opt-ins and STOP/RESUME over ~20 days, delivered late,
out of order and sometimes twice. Intents come at random times and in bursts; every Allowed is
recorded with `record_send`, as the sender would. Profiles are the defaults or random switches
with tight caps.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_policy_helpers import (
    T0,
    comment,
    deleted,
    dm,
    echo,
    optin,
    postback,
    quick_reply,
    reaction,
    read,
    referral,
    resume,
    state_of,
    stop,
    story_mention,
    story_reply,
)
from test_policy_oracle import Oracle, user_initiated

from bot.events import Event, Message, OptIn, OptInKind, Platform, Reaction, Read
from bot.policy import (
    Allowed,
    Author,
    BasisKind,
    Content,
    ConversationState,
    Intent,
    PolicyProfile,
    RefusalReason,
    Refused,
    apply_event,
    decide,
    default_profile,
    from_dict,
    mark_unreachable,
    prune,
    record_meta_refusal,
    record_send,
    set_handoff,
    to_dict,
)

SPAN = 20 * 24 * 60  # minutes: histories cover about 20 days
MIN = timedelta(minutes=1)
DAY = timedelta(days=1)
TOPICS = ("a", "b")
TAGS = (None, "HUMAN_AGENT", "POST_PURCHASE_UPDATE", "ACCOUNT_UPDATE", "SHIPPING_UPDATE")
FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# The oracle test is the one that finds bugs: it gets the larger share of the time budget.
THOROUGH = settings(FAST, max_examples=500)
Session = tuple[PolicyProfile, Platform, list[tuple[datetime, Any]]]

# --- strategies ------------------------------------------------------------------------------
# Strategies are built once (via `ints`/`one`) and dynamic lists are indexed with `pick`:
# building strategies inside every draw would cost more than the checks themselves.

SIMPLE = (dm, echo, deleted, story_reply, story_mention, quick_reply, postback, read, reaction)
BOOL = st.booleans()
INDEX = st.integers(0, 1 << 16)
OFFSETS = st.integers(0, 20 * 60) | st.integers(0, 8 * 24 * 60)
LATER = st.integers(20 * 60, 8 * 24 * 60)  # past the 24 h window, around the 7-day ones
FOCUS = ("mixed", "optins", "tokens", "agents")
MOSTLY_A = st.sampled_from(("a", "a", "a", "b"))  # token sessions: topics that match often


@cache
def ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.integers(lo, hi)


@cache
def one(options: tuple[Any, ...]) -> st.SearchStrategy[Any]:
    return st.sampled_from(options)


def pick(draw: st.DrawFn, options: list[Any]) -> Any:
    return options[draw(INDEX) % len(options)]


def moment(draw: st.DrawFn) -> datetime:
    return T0 + draw(ints(0, SPAN)) * MIN


@st.composite
def histories(draw: st.DrawFn, platform: Platform, tokens_focus: bool = False) -> list[Event]:
    events: list[Event] = []
    for _ in range(draw(ints(0, 10))):
        events.append(draw(one(SIMPLE))(moment(draw), platform))
    for _ in range(draw(ints(0, 2))):
        events.append(referral(moment(draw), platform, ad=draw(BOOL)))
    for i in range(draw(ints(0, 4))):
        live, own = draw(BOOL), draw(ints(0, 5)) == 0
        events.append(comment(moment(draw), f"c{i}", platform, live=live, own=own))
    tokens = []
    for i in range(draw(ints(2, 5) if tokens_focus else ints(0, 3))):
        topic = draw(MOSTLY_A if tokens_focus else one(TOPICS))
        kind, ts = draw(one(tuple(OptInKind))), moment(draw)
        expiry = ts + draw(ints(1, 40)) * DAY if draw(BOOL) else None
        freq = draw(one(("DAILY", "WEEKLY", "MONTHLY", None)))
        tokens.append(f"t{i}")
        events.append(optin(ts, topic, f"t{i}", kind, platform, frequency=freq, expiry=expiry))
    for _ in range(draw(ints(0, 5 if tokens_focus else 2))):
        make = draw(one((stop, resume)))
        target = draw(one(("token", "topic", "all")))
        token = pick(draw, [*tokens, "unknown"]) if target == "token" else None
        topic = draw(one(TOPICS)) if target == "topic" else None
        # Often right around an opt-in: a STOP just before it must not touch the new token.
        optins = [e.timestamp for e in events if isinstance(e, OptIn)]
        near: bool = draw(BOOL)
        ts = pick(draw, optins) + draw(ints(-90, 90)) * MIN if optins and near else moment(draw)
        events.append(make(ts, topic, token, platform))
    if events:  # Meta re-delivers the very same payload
        events += [pick(draw, events) for _ in range(draw(ints(0, 3)))]
    order = [draw(INDEX) for _ in events]
    return [e for _, _, e in sorted(zip(order, range(len(events)), events, strict=True))]


@st.composite
def profiles(draw: st.DrawFn, focus: str = "mixed") -> PolicyProfile:
    """The defaults, or random switches and tight caps (the oracle reads the same rules).

    A session focused on opt-ins or tokens mostly switches those on, so the caps, cooldowns,
    STOP/RESUME and frequency limits are exercised often.
    """
    base = default_profile()
    if focus == "mixed" and draw(BOOL):
        return base
    on = BOOL if focus == "mixed" else one((True, True, True, False))
    for platform in Platform:
        rules = replace(
            base.for_platform(platform),
            human_agent_enabled=draw(BOOL),
            ad_referral_window=draw(one((None, 7 * DAY, 2 * DAY))),
            one_time_notifications=draw(on),
            marketing_messages=draw(on),
            message_tags=frozenset(t for t in TAGS[2:] if draw(BOOL)),
            optin_request_cooldown=draw(one((7 * DAY, DAY, 180 * MIN))),
            optin_requests_per_day=draw(one((None, 1, 2, 5))),
            optin_requests_per_week=draw(one((None, 2, 3, 10))),
            live_comment_window=draw(one((60 * MIN, 240 * MIN))),
            send_margin=draw(one((timedelta(0), timedelta(seconds=15), 30 * MIN))),
            comment_time_margin=draw(one((timedelta(0), 36 * 60 * MIN))),
            private_reply_strict=draw(BOOL),
        )
        base = base.with_platform(rules)
    return base


OPTIN_REQUESTS = st.builds(Intent.optin_request, one(tuple(OptInKind)), one(TOPICS))
TOKEN_INTENTS = st.builds(
    Intent,
    author=one(tuple(Author)),
    via_token=one((None, *OptInKind)),
    topic=MOSTLY_A,
)
# Humans and tags after the 24 h window: HUMAN_AGENT, tag and content rules.
AGENT_INTENTS = st.builds(
    Intent,
    author=one(tuple(Author)),
    content=one((Content.PROMOTIONAL, Content.SUPPORT, Content.NON_PROMOTIONAL)),
    tag=one(TAGS),
)
INTENTS = st.one_of(
    one(tuple(Intent(comment_id=f"c{i}") for i in range(5))),
    st.builds(
        Intent,
        author=one(tuple(Author)),
        content=one((Content.PROMOTIONAL, Content.SUPPORT, Content.NON_PROMOTIONAL)),
        topic=one((None, *TOPICS)),
        tag=one(TAGS),
    ),
    one(tuple(Intent(author=Author.HUMAN, content=Content.SUPPORT, tag=tag) for tag in TAGS[:3])),
    OPTIN_REQUESTS,
    TOKEN_INTENTS,
)
FOCUSED_INTENTS = {
    "mixed": INTENTS,
    "optins": st.one_of(OPTIN_REQUESTS, OPTIN_REQUESTS, OPTIN_REQUESTS, INTENTS),
    "tokens": TOKEN_INTENTS,
    "agents": AGENT_INTENTS,
}


@st.composite
def sessions(draw: st.DrawFn) -> Session:
    """A mixed session, or one focused on opt-in requests, token sends or humans and tags."""
    focus = draw(one(FOCUS))
    intents = FOCUSED_INTENTS[focus]
    busy = focus != "mixed"  # focused sessions: more user messages, longer bursts
    profile = draw(profiles(focus))
    platform = draw(one(tuple(Platform)))
    events = draw(histories(platform, tokens_focus=focus == "tokens"))
    # Extra user messages; for opt-in sessions within one week, so the weekly cap can bind.
    span = 7 * 24 * 60 if focus == "optins" else SPAN
    events += [
        dm(T0 + draw(ints(0, span)) * MIN, platform) for _ in range(draw(ints(0, 3 * busy)))
    ]
    steps: list[tuple[datetime, Any]] = []
    for event in events:  # delivered late, sometimes very late
        delay = draw(one((0, 1, 60, 24 * 60, 2 * 24 * 60)))
        steps.append((event.timestamp + delay * MIN, event))
    for _ in range(draw(ints(0, 8))):
        steps.append((moment(draw), draw(intents)))
    # Bursts of intents after a user's message, where the windows and caps are busy.
    users = [e.timestamp for e in events if user_initiated(e)]
    for _ in range(draw(ints(1 + busy, 4))):
        anchor = pick(draw, users or [e.timestamp for e in events] or [T0])
        for _ in range(draw(ints(1 + 2 * busy, 8))):
            offset = draw(LATER if focus == "agents" else OFFSETS)
            steps.append((anchor + offset * MIN, draw(intents)))
    if focus == "mixed":
        for _ in range(draw(ints(0, 2))):
            steps.append((moment(draw), draw(one(("unreachable", "handoff", "handback")))))
    # Meta refusing the latest send as outside its window (10/2018278), some minutes on.
    for _ in range(draw(ints(0, 2))):
        steps.append((moment(draw), "refused_by_meta"))
    steps.sort(key=lambda s: s[0])
    return profile, platform, steps


# --- properties ------------------------------------------------------------------------------


def check_refused(
    state: ConversationState, intent: Intent, now: datetime, d: Refused, p: PolicyProfile
) -> None:
    """`next_possible` is exact: allowed then, refused just before, never when None."""
    assert d.detail
    if d.next_possible is None:
        for later in (now + MIN, now + DAY, now + 8 * DAY, now + 31 * DAY, now + 400 * DAY):
            then = decide(state, intent, later, p)
            assert isinstance(then, Refused), (d, later, then)
        return
    assert d.next_possible > now
    then = decide(state, intent, d.next_possible, p)
    assert isinstance(then, Allowed), (d, then)
    just_before = d.next_possible - timedelta(microseconds=1)
    for earlier in (just_before, now + (just_before - now) / 2):
        if earlier > now:
            then = decide(state, intent, earlier, p)
            assert isinstance(then, Refused), (d, earlier, then)


@THOROUGH
@given(sessions())
def test_every_decision_agrees_with_the_oracle(session: Session) -> None:
    """`decide` allows exactly what the oracle allows, and every Allowed is sound.

    That pins, among others: no automated send outside an open basis; HUMAN_AGENT never for
    automation; one private reply per comment (a second ask right after is refused); nothing
    but private replies after a private reply until the user writes; opt-in requests only in
    the 24 h window, once per (kind, topic) per cooldown and within the caps; one-time tokens
    used once; no marketing after STOP or within the frequency period; `until` > now and equal
    to the basis's real close; `next_possible` exact.
    """
    profile, platform, steps = session
    state = ConversationState(platform=platform)
    oracle = Oracle(profile.for_platform(platform))
    for now, step in steps:
        if step == "unreachable":
            state, oracle.unreachable = mark_unreachable(state, now), now
        elif step in ("handoff", "handback"):
            oracle.handoff = now if step == "handoff" else None
            state = set_handoff(state, oracle.handoff)
        elif step == "refused_by_meta":
            if oracle.sends:
                _, last = oracle.sends[-1]
                state = record_meta_refusal(state, last, now, 10, 2018278)
                oracle.refused_by_meta.append((now, last))
        elif isinstance(step, Intent):
            d = decide(state, step, now, profile)
            assert isinstance(d, Allowed) == oracle.allows(step, now), d
            if isinstance(d, Refused):
                check_refused(state, step, now, d, profile)
                continue
            oracle.check_allowed(d, step, now)
            state = record_send(state, d, now)
            oracle.sends.append((now, d))
            again = decide(state, step, now, profile)
            if d.basis is BasisKind.PRIVATE_REPLY:
                assert isinstance(again, Refused)
                assert again.reason is RefusalReason.PRIVATE_REPLY_ALREADY_SENT
            if step.optin is not None:
                assert isinstance(again, Refused)
                assert again.reason is RefusalReason.OPTIN_REQUESTED_RECENTLY
        else:
            state = apply_event(state, step, profile)
            oracle.events.append(step)


@FAST
@given(st.data())
def test_the_reducer_does_not_depend_on_event_order(data: st.DataObject) -> None:
    platform = data.draw(one(tuple(Platform)))
    events = data.draw(histories(platform))
    shuffled = data.draw(st.permutations(events))
    by_time = sorted(events, key=lambda e: e.timestamp)
    assert (
        state_of(events, platform) == state_of(shuffled, platform) == state_of(by_time, platform)
    )


@FAST
@given(st.data())
def test_echoes_reads_reactions_and_deletions_change_nothing(data: st.DataObject) -> None:
    platform = data.draw(one(tuple(Platform)))
    events = data.draw(histories(platform))
    quiet = [
        e
        for e in events
        if not isinstance(e, Read | Reaction)
        and not (isinstance(e, Message) and (e.is_echo or e.is_deleted))
    ]
    state = state_of(events, platform)
    assert state == state_of(quiet, platform)
    assert state.last_user_message_at == max(
        (e.timestamp for e in events if user_initiated(e)), default=None
    )


@FAST
@given(sessions(), st.integers(0, 30), st.lists(INTENTS, min_size=1, max_size=5))
def test_state_round_trips_and_pruning_changes_no_decision(
    session: Session, day: int, intents: list[Intent]
) -> None:
    profile, platform, steps = session
    state = ConversationState(platform=platform)
    for at, step in steps:
        if isinstance(step, Intent):
            d = decide(state, step, at, profile)
            state = record_send(state, d, at) if isinstance(d, Allowed) else state
        elif not isinstance(step, str):
            state = apply_event(state, step, profile)
    assert from_dict(to_dict(state)) == state
    now = T0 + day * DAY
    pruned = prune(state, now, profile)
    for intent in intents:
        for when in (now, now + DAY):
            before, after = (
                decide(state, intent, when, profile),
                decide(pruned, intent, when, profile),
            )
            assert isinstance(before, Allowed) == isinstance(after, Allowed)
            if isinstance(before, Allowed):
                assert before == after
