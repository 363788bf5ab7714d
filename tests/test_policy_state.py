"""The reducer, the send record, pruning and storage of `ConversationState`."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from test_policy_helpers import (
    T0,
    comment,
    dm,
    one_time,
    optin,
    referral,
    state_of,
    stop,
)

from bot.events import Message, OptInKind, Platform
from bot.policy import (
    Allowed,
    BasisKind,
    CommentBasis,
    ConversationState,
    Intent,
    OptInRequest,
    RefusalReason,
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

H = timedelta(hours=1)
D = timedelta(days=1)
PROFILE = default_profile()


def test_a_comment_is_added_once_by_comment_id() -> None:
    state = state_of([comment(T0), comment(T0 + H), comment(T0, "c2")])
    assert state.comments == (CommentBasis("c1", T0), CommentBasis("c2", T0))


def test_a_duplicate_comment_keeps_the_earliest_time_and_live_flag() -> None:
    state = state_of([comment(T0 + H), comment(T0, live=True)])
    assert state.comments == (CommentBasis("c1", T0, live=True),)


def test_comments_do_not_touch_the_standard_window() -> None:
    assert state_of([comment(T0)]).last_user_message_at is None


def test_an_optin_adds_a_token_once() -> None:
    state = state_of([optin(T0, expiry=T0 + 9 * D), optin(T0)])
    (token,) = state.tokens
    assert (token.kind, token.topic, token.token) == (OptInKind.MARKETING, "sale", "tok-1")
    assert (token.received_at, token.expires_at, token.frequency) == (T0, T0 + 9 * D, "DAILY")


def test_an_optin_without_a_token_adds_nothing() -> None:
    assert state_of([optin(T0, token=None)]).tokens == ()


def test_a_stop_without_topic_or_token_stops_every_marketing_token() -> None:
    state = state_of([optin(T0), optin(T0, "news", "tok-2"), one_time(T0), stop(T0 + H, None)])
    assert [t.stopped for t in state.tokens] == [False, True, True]  # sorted by token name


def test_an_ad_referral_moves_both_windows() -> None:
    state = state_of([referral(T0, ad=True)])
    assert state.last_user_message_at == state.last_ad_referral_at == T0
    ad_dm = replace(dm(T0 + H), referral_ad_id="ad-1")
    assert state_of([ad_dm]).last_ad_referral_at == T0 + H
    assert state_of([referral(T0)]).last_ad_referral_at is None


def test_record_send_marks_the_private_reply() -> None:
    state = state_of([comment(T0)])
    d = decide(state, Intent(comment_id="c1"), T0 + H, PROFILE)
    assert isinstance(d, Allowed)
    state = record_send(state, d, T0 + H)
    assert state.comments[0].private_reply_at == T0 + H
    assert state.last_private_reply_at == state.last_send_at == T0 + H


def test_record_send_counts_an_optin_request() -> None:
    state = state_of([dm(T0)])
    d = decide(state, Intent.optin_request(OptInKind.ONE_TIME, "restock"), T0 + H, PROFILE)
    assert isinstance(d, Allowed)
    state = record_send(record_send(state, d, T0 + H), d, T0 + H)
    assert state.optin_requests == (OptInRequest(OptInKind.ONE_TIME, "restock", T0 + H),)


def test_record_send_spends_a_one_time_token_and_dates_a_marketing_one() -> None:
    state = state_of([one_time(T0), optin(T0)])
    for intent in (
        Intent(via_token=OptInKind.ONE_TIME, topic="restock"),
        Intent(via_token=OptInKind.MARKETING, topic="sale"),
    ):
        d = decide(state, intent, T0 + D, PROFILE)
        assert isinstance(d, Allowed)
        state = record_send(state, d, T0 + D)
    by_token = {t.token: t for t in state.tokens}
    assert by_token["otn-1"].used_at == T0 + D
    assert by_token["tok-1"].last_sent_at == T0 + D
    assert by_token["tok-1"].used_at is None


def test_handoff_and_unreachable_are_recorded() -> None:
    state = ConversationState(platform=Platform.INSTAGRAM)
    assert set_handoff(state, T0).handoff_since == T0
    assert set_handoff(set_handoff(state, T0), None).handoff_since is None
    assert mark_unreachable(mark_unreachable(state, T0 + H), T0).unreachable_since == T0 + H


def test_prune_drops_what_can_no_longer_matter() -> None:
    state = state_of([comment(T0, "old"), comment(T0 + 9 * D, "new"), one_time(T0)])
    d = decide(state, Intent(via_token=OptInKind.ONE_TIME, topic="restock"), T0 + H, PROFILE)
    assert isinstance(d, Allowed)
    state = record_send(state, d, T0 + H)
    state = replace(
        state,
        optin_requests=(
            OptInRequest(OptInKind.ONE_TIME, "a", T0),
            OptInRequest(OptInKind.ONE_TIME, "b", T0 + 9 * D),
        ),
    )
    pruned = prune(state, T0 + 10 * D, PROFILE)
    assert [c.comment_id for c in pruned.comments] == ["new"]
    assert [r.topic for r in pruned.optin_requests] == ["b"]
    assert pruned.tokens == state.tokens  # a spent token is kept a year
    assert prune(state, T0 + 370 * D, PROFILE).tokens == ()


def test_prune_keeps_a_commenters_reply_wait() -> None:
    state = state_of([comment(T0)])
    d = decide(state, Intent(comment_id="c1"), T0, PROFILE)
    assert isinstance(d, Allowed)
    state = prune(record_send(state, d, T0), T0 + 30 * D, PROFILE)
    assert state.comments == ()
    assert state.last_private_reply_at == T0


def test_state_round_trips_through_json() -> None:
    state = state_of([dm(T0), comment(T0, live=True), optin(T0, expiry=T0 + D), stop(T0 + H)])
    d = decide(state, Intent(comment_id="c1"), T0 + H / 2, PROFILE)
    assert isinstance(d, Allowed)
    state = mark_unreachable(set_handoff(record_send(state, d, T0 + H / 2), T0 + H), T0 + H)
    state = replace(state, optin_requests=(OptInRequest(OptInKind.MARKETING, None, T0),))
    data = json.loads(json.dumps(to_dict(state)))
    assert data["last_user_message_at"] == T0.isoformat()
    assert from_dict(data) == state


def test_an_old_stored_state_without_new_keys_still_loads() -> None:
    state = from_dict({"platform": "messenger"})
    assert state == ConversationState(platform=Platform.MESSENGER)


def test_a_deleted_or_echoed_message_is_not_user_initiated() -> None:
    deleted_dm: Message = replace(dm(T0), is_deleted=True)
    assert state_of([deleted_dm]).last_user_message_at is None
    assert apply_event(state_of([]), dm(T0), PROFILE.instagram).last_user_message_at == T0


def test_a_private_reply_allowed_names_the_comment() -> None:
    d = decide(state_of([comment(T0)]), Intent(comment_id="c1"), T0, PROFILE)
    assert isinstance(d, Allowed) and d.basis is BasisKind.PRIVATE_REPLY


def test_every_refusal_reason_is_pinned_by_a_named_test() -> None:
    text = "".join(
        p.read_text(encoding="utf-8") for p in Path(__file__).parent.glob("test_policy_*.py")
    )
    missing = [r.name for r in RefusalReason if f"R.{r.name}" not in text]
    assert not missing, f"no test produces {missing}"
