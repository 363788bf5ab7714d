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
    record_send,
    set_handoff,
    to_dict,
)

SPAN = 20 * 24 * 60  # minutes
MIN = timedelta(minutes=1)
DAY = timedelta(days=1)
TOPICS = ("a", "b")
TAGS = (None, "HUMAN_AGENT", "POST_PURCHASE_UPDATE", "ACCOUNT_UPDATE", "SHIPPING_UPDATE")
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
Session = tuple[PolicyProfile, Platform, list[tuple[datetime, Any]]]

# --- strategies ------------------------------------------------------------------------------

minutes = st.integers(0, SPAN)
SIMPLE = (dm, echo, deleted, story_reply, story_mention, quick_reply, postback, read, reaction)


@st.composite
def histories(draw: st.DrawFn, platform: Platform, tokens_focus: bool = False) -> list[Event]:
    def at() -> datetime:
        return T0 + draw(minutes) * MIN

    events: list[Event] = []
    for _ in range(draw(st.integers(0, 10))):
        events.append(draw(st.sampled_from(SIMPLE))(at(), platform))
    for _ in range(draw(st.integers(0, 2))):
        events.append(referral(at(), platform, ad=draw(st.booleans())))
    for i in range(draw(st.integers(0, 4))):
        live, own = draw(st.booleans()), draw(st.integers(0, 5)) == 0
        events.append(comment(at(), f"c{i}", platform, live=live, own=own))
    tokens = []
    for i in range(draw(st.integers(2 if tokens_focus else 0, 5 if tokens_focus else 3))):
        kind, topic, ts = draw(st.sampled_from(OptInKind)), draw(st.sampled_from(TOPICS)), at()
        expiry = ts + draw(st.integers(1, 40)) * DAY if draw(st.booleans()) else None
        freq = draw(st.sampled_from(["DAILY", "WEEKLY", "MONTHLY", None]))
        tokens.append(f"t{i}")
        events.append(optin(ts, topic, f"t{i}", kind, platform, frequency=freq, expiry=expiry))
    for _ in range(draw(st.integers(0, 5 if tokens_focus else 2))):
        make = draw(st.sampled_from([stop, resume]))
        target = draw(st.sampled_from(["token", "topic", "all"]))
        token = draw(st.sampled_from([*tokens, "unknown"])) if target == "token" else None
        topic = draw(st.sampled_from(TOPICS)) if target == "topic" else None
        # Often right around an opt-in: a STOP just before it must not touch the new token.
        optins = [e.timestamp for e in events if isinstance(e, OptIn)]
        if optins and draw(st.booleans()):
            ts = draw(st.sampled_from(optins)) + draw(st.integers(-90, 90)) * MIN
        else:
            ts = at()
        events.append(make(ts, topic, token, platform))
    if events:  # Meta re-delivers the very same payload
        events += draw(st.lists(st.sampled_from(events), max_size=3))
    return draw(st.permutations(events))


@st.composite
def profiles(draw: st.DrawFn) -> PolicyProfile:
    """The defaults, or rules with random switches and tight caps (the oracle reads them)."""
    base = default_profile()
    if draw(st.booleans()):
        return base
    for platform in Platform:
        rules = replace(
            base.for_platform(platform),
            human_agent_enabled=draw(st.booleans()),
            ad_referral_window=draw(st.sampled_from([None, 7 * DAY, 2 * DAY])),
            one_time_notifications=draw(st.booleans()),
            marketing_messages=draw(st.booleans()),
            message_tags=frozenset(draw(st.sets(st.sampled_from(TAGS[2:])))),
            optin_request_cooldown=draw(st.sampled_from([7 * DAY, DAY, 180 * MIN])),
            optin_requests_per_day=draw(st.sampled_from([None, 1, 2, 5])),
            optin_requests_per_week=draw(st.sampled_from([None, 2, 3, 10])),
            live_comment_window=draw(st.sampled_from([60 * MIN, 240 * MIN])),
        )
        base = base.with_platform(rules)
    return base


OPTIN_REQUESTS = st.builds(
    Intent.optin_request, st.sampled_from(OptInKind), st.sampled_from(TOPICS)
)
INTENTS = st.one_of(
    st.sampled_from([Intent(comment_id=f"c{i}") for i in range(5)]),
    st.builds(
        Intent,
        author=st.sampled_from(Author),
        content=st.sampled_from([Content.PROMOTIONAL, Content.SUPPORT, Content.NON_PROMOTIONAL]),
        topic=st.sampled_from([None, *TOPICS]),
        tag=st.sampled_from(TAGS),
    ),
    st.sampled_from(
        [Intent(author=Author.HUMAN, content=Content.SUPPORT, tag=tag) for tag in TAGS[:3]]
    ),
    OPTIN_REQUESTS,
    st.builds(
        Intent,
        author=st.sampled_from(Author),
        via_token=st.sampled_from(OptInKind),
        topic=st.sampled_from(TOPICS),
    ),
)


TOKEN_INTENTS = st.builds(
    Intent,
    author=st.sampled_from(Author),
    via_token=st.sampled_from([None, *OptInKind]),
    topic=st.sampled_from(TOPICS),
)


@st.composite
def sessions(draw: st.DrawFn) -> Session:
    """A mixed session, or one focused on opt-in requests or on token sends."""
    focus = draw(st.sampled_from(["mixed", "optins", "tokens"]))
    intents = {"mixed": INTENTS, "optins": OPTIN_REQUESTS | INTENTS, "tokens": TOKEN_INTENTS}
    profile = draw(profiles())
    platform = draw(st.sampled_from(Platform))
    events = draw(histories(platform, tokens_focus=focus == "tokens"))
    steps: list[tuple[datetime, Any]] = []
    for event in events:  # delivered late, sometimes very late
        delay = draw(st.sampled_from([0, 1, 60, 24 * 60, 2 * 24 * 60]))
        steps.append((event.timestamp + delay * MIN, event))
    for _ in range(draw(st.integers(0, 8))):
        steps.append((T0 + draw(minutes) * MIN, draw(intents[focus])))
    # Bursts of intents after a user's message, where the windows and caps are busy.
    users = [e.timestamp for e in events if user_initiated(e)]
    for _ in range(draw(st.integers(1, 4))):
        anchor = draw(st.sampled_from(users or [e.timestamp for e in events] or [T0]))
        for _ in range(draw(st.integers(1, 8))):
            offset = draw(st.integers(0, 20 * 60) | st.integers(0, 8 * 24 * 60))
            steps.append((anchor + offset * MIN, draw(intents[focus])))
    if focus == "mixed":
        for _ in range(draw(st.integers(0, 2))):
            what = draw(st.sampled_from(["unreachable", "handoff", "handback"]))
            steps.append((T0 + draw(minutes) * MIN, what))
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
            assert isinstance(decide(state, intent, later, p), Refused)
        return
    assert d.next_possible > now
    assert isinstance(decide(state, intent, d.next_possible, p), Allowed)
    just_before = d.next_possible - timedelta(microseconds=1)
    if just_before > now:
        assert isinstance(decide(state, intent, just_before, p), Refused)
        assert isinstance(decide(state, intent, now + (just_before - now) / 2, p), Refused)


@FAST
@given(sessions())
def test_every_decision_agrees_with_the_oracle(session: Session) -> None:
    """No send outside a basis, none refused that POLICY.md allows; once per comment; etc."""
    profile, platform, steps = session
    state = ConversationState(platform=platform)
    oracle = Oracle(profile.for_platform(platform))
    for now, step in steps:
        if step == "unreachable":
            state, oracle.unreachable = mark_unreachable(state, now), now
        elif step in ("handoff", "handback"):
            oracle.handoff = now if step == "handoff" else None
            state = set_handoff(state, oracle.handoff)
        elif isinstance(step, Intent):
            d = decide(state, step, now, profile)
            if isinstance(d, Refused) and d.reason is RefusalReason.OPTIN_DAILY_LIMIT:
                raise RuntimeError((oracle.requests(now, DAY), oracle.rules.optin_requests_per_day, oracle.allows(step, now), state.optin_requests, now))
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
    platform = data.draw(st.sampled_from(Platform))
    events = data.draw(histories(platform))
    shuffled = data.draw(st.permutations(events))
    by_time = sorted(events, key=lambda e: e.timestamp)
    assert (
        state_of(events, platform) == state_of(shuffled, platform) == state_of(by_time, platform)
    )


@FAST
@given(st.data())
def test_echoes_reads_reactions_and_deletions_change_nothing(data: st.DataObject) -> None:
    platform = data.draw(st.sampled_from(Platform))
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
