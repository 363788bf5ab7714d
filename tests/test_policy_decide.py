"""`decide` for the windows, private replies, human agent, tags and gates (POLICY.md §1)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from test_policy_helpers import (
    T0,
    comment,
    deleted,
    dm,
    echo,
    one_time,
    optin,
    postback,
    quick_reply,
    reaction,
    read,
    referral,
    state_of,
    story_mention,
    story_reply,
)

from bot.events import Event, OptInKind, Platform
from bot.policy import (
    Allowed,
    Author,
    BasisKind,
    Content,
    ConversationState,
    Intent,
    OpenBasis,
    RefusalReason,
    Refused,
    apply_event,
    deadline,
    decide,
    default_profile,
    load_profile,
    mark_unreachable,
    open_bases,
    record_meta_refusal,
    record_send,
    set_handoff,
)

H = timedelta(hours=1)
D = timedelta(days=1)
R = RefusalReason
PROFILE = default_profile()
PROMO = Intent()
HUMAN_SUPPORT = Intent(author=Author.HUMAN, content=Content.SUPPORT)
IG, FB = Platform.INSTAGRAM, Platform.MESSENGER


def allowed(
    state: ConversationState, intent: Intent, now: object, profile: object = None
) -> Allowed:
    d = decide(state, intent, now, profile or PROFILE)  # type: ignore[arg-type]
    assert isinstance(d, Allowed), d
    return d


def refused(
    state: ConversationState, intent: Intent, now: object, profile: object = None
) -> Refused:
    d = decide(state, intent, now, profile or PROFILE)  # type: ignore[arg-type]
    assert isinstance(d, Refused), d
    assert d.detail
    return d


# --- standard window -------------------------------------------------------------------------


def test_standard_window_allows_promotional_within_24h_of_a_dm() -> None:
    d = allowed(state_of([dm(T0)]), PROMO, T0 + 23 * H)
    assert d.basis is BasisKind.STANDARD_WINDOW
    assert (d.messaging_type, d.recipient_field, d.recipient_value) == ("RESPONSE", "id", None)
    assert d.until == T0 + 24 * H


def test_standard_window_is_closed_24h_after_the_latest_user_message() -> None:
    d = refused(state_of([dm(T0)]), PROMO, T0 + 24 * H)
    assert d.reason is R.WINDOW_CLOSED
    assert d.next_possible is None


def test_each_user_message_resets_the_standard_window() -> None:
    d = allowed(state_of([dm(T0), dm(T0 + 20 * H)]), PROMO, T0 + 30 * H)
    assert d.until == T0 + 44 * H


@pytest.mark.parametrize("make", [story_reply, story_mention, quick_reply, postback, referral])
def test_story_replies_mentions_quick_replies_postbacks_referrals_open_the_window(
    make: object,
) -> None:
    event = make(T0)  # type: ignore[operator]
    assert allowed(state_of([event]), PROMO, T0 + H).basis is BasisKind.STANDARD_WINDOW


@pytest.mark.parametrize("make", [echo, deleted, read, reaction, comment, optin, one_time])
def test_echoes_reads_reactions_deletions_comments_optins_do_not_open_the_window(
    make: object,
) -> None:
    event: Event = make(T0)  # type: ignore[operator]
    assert refused(state_of([event]), PROMO, T0 + H).reason is R.NO_OPEN_BASIS


def test_an_echo_never_extends_the_window() -> None:
    d = refused(state_of([dm(T0), echo(T0 + 20 * H)]), PROMO, T0 + 25 * H)
    assert d.reason is R.WINDOW_CLOSED


def test_a_late_old_event_never_rewinds_the_window() -> None:
    d = allowed(state_of([dm(T0 + 20 * H), dm(T0)]), PROMO, T0 + 30 * H)
    assert d.until == T0 + 44 * H


def test_standby_events_still_open_the_window() -> None:
    event = replace(dm(T0), standby=True)
    assert allowed(state_of([event]), PROMO, T0 + H).basis is BasisKind.STANDARD_WINDOW


def test_no_open_basis_when_the_user_never_wrote() -> None:
    d = refused(ConversationState(platform=IG), PROMO, T0)
    assert (d.reason, d.next_possible) == (R.NO_OPEN_BASIS, None)


# --- private replies -------------------------------------------------------------------------


def test_private_reply_goes_to_the_comment_id_within_seven_days() -> None:
    # Page comments carry their own creation time: the whole 7 days.
    d = allowed(state_of([comment(T0, platform=FB)], FB), Intent(comment_id="c1"), T0 + 6 * D)
    assert d.basis is BasisKind.PRIVATE_REPLY
    assert (d.recipient_field, d.recipient_value, d.comment_id) == ("comment_id", "c1", "c1")
    assert d.until == T0 + 7 * D


def test_an_instagram_comment_window_is_shorter_by_meta_s_webhook_retry_horizon() -> None:
    # The webhook's time is when Meta sent it, and Meta retries for up to 36 h (POLICY.md §2):
    # the comment may be that much older, so a late private reply stops 36 h early.
    state = state_of([comment(T0)])
    assert allowed(state, Intent(comment_id="c1"), T0 + 5 * D).until == T0 + 7 * D - 36 * H
    d = refused(state, Intent(comment_id="c1"), T0 + 6 * D)
    assert d.reason is R.PRIVATE_REPLY_EXPIRED


def test_every_basis_counts_as_closed_a_safety_margin_before_it_closes() -> None:
    # A send decided 1 s before the 24 h close reached Meta after it (10/2018278).
    margin = PROFILE.instagram.send_margin
    assert margin >= timedelta(seconds=15)
    ms = timedelta(milliseconds=1)
    state = state_of([dm(T0), comment(T0)])
    assert allowed(state, PROMO, T0 + 24 * H - margin - ms).until == T0 + 24 * H
    d = refused(state, PROMO, T0 + 24 * H - timedelta(seconds=1))
    assert d.reason is R.WINDOW_CLOSED and "closes at" in d.detail and "15s early" in d.detail
    end = T0 + 7 * D - 36 * H
    assert allowed(state, Intent(comment_id="c1"), end - margin - ms).until == end
    assert refused(state, Intent(comment_id="c1"), end - margin).reason is R.PRIVATE_REPLY_EXPIRED
    human = refused(state, HUMAN_SUPPORT, T0 + 7 * D - timedelta(seconds=1))
    assert human.reason is R.HUMAN_AGENT_WINDOW_CLOSED


def test_private_reply_is_refused_after_seven_days() -> None:
    d = refused(state_of([comment(T0)]), Intent(comment_id="c1"), T0 + 7 * D)
    assert (d.reason, d.next_possible) == (R.PRIVATE_REPLY_EXPIRED, None)


def test_private_reply_to_a_live_comment_only_within_the_live_window() -> None:
    state = state_of([comment(T0, live=True)])
    assert allowed(state, Intent(comment_id="c1"), T0 + 59 * timedelta(minutes=1)).until == T0 + H
    assert refused(state, Intent(comment_id="c1"), T0 + H).reason is R.PRIVATE_REPLY_EXPIRED


def test_private_reply_is_sent_once_per_comment() -> None:
    state = state_of([comment(T0)])
    state = record_send(state, allowed(state, Intent(comment_id="c1"), T0), T0)
    assert refused(state, Intent(comment_id="c1"), T0 + H).reason is R.PRIVATE_REPLY_ALREADY_SENT


def test_a_redelivered_comment_webhook_does_not_reopen_its_private_reply() -> None:
    state = state_of([comment(T0)])
    state = record_send(state, allowed(state, Intent(comment_id="c1"), T0), T0)
    state = apply_event(state, comment(T0), PROFILE)
    assert refused(state, Intent(comment_id="c1"), T0 + H).reason is R.PRIVATE_REPLY_ALREADY_SENT


def test_private_reply_to_an_unknown_comment_is_refused() -> None:
    assert refused(state_of([dm(T0)]), Intent(comment_id="zz"), T0).reason is R.UNKNOWN_COMMENT


def test_the_accounts_own_comment_gives_no_private_reply() -> None:
    state = state_of([comment(T0, own=True)])
    assert refused(state, Intent(comment_id="c1"), T0).reason is R.UNKNOWN_COMMENT


def test_a_second_comment_gives_a_new_private_reply_even_while_awaiting_a_reply() -> None:
    state = state_of([comment(T0, "c1"), comment(T0 + H, "c2")])
    state = record_send(state, allowed(state, Intent(comment_id="c1"), T0 + 2 * H), T0 + 2 * H)
    assert allowed(state, Intent(comment_id="c2"), T0 + 3 * H).comment_id == "c2"


STRICT = PROFILE.with_platform(replace(PROFILE.instagram, private_reply_strict=True))


def test_after_a_private_reply_nothing_else_goes_until_the_user_writes() -> None:
    state = state_of([dm(T0 - 2 * D), comment(T0 + H)])  # an old DM: its window is closed
    state = record_send(state, allowed(state, Intent(comment_id="c1"), T0 + 2 * H), T0 + 2 * H)
    d = refused(state, PROMO, T0 + 3 * H)
    assert (d.reason, d.next_possible) == (R.AWAITING_USER_REPLY, None)
    assert refused(state, HUMAN_SUPPORT, T0 + 3 * H).reason is R.AWAITING_USER_REPLY
    state = apply_event(state, dm(T0 + 4 * H), PROFILE)
    assert allowed(state, PROMO, T0 + 5 * H).until == T0 + 28 * H


def test_a_dm_written_before_the_private_reply_went_out_is_answered_in_its_window() -> None:
    # With a slow Graph API, users' "yes" arrived while their private replies were queued:
    # their own DM opened the 24 h window (POLICY.md §1), and a later private reply doesn't
    # close it. When that window closes, the wait for a reply holds again.
    state = state_of([comment(T0)])
    state = apply_event(state, dm(T0 + H), PROFILE)  # written before the reply went
    state = record_send(state, allowed(state, Intent(comment_id="c1"), T0 + 2 * H), T0 + 2 * H)
    assert allowed(state, PROMO, T0 + 4 * H).basis is BasisKind.STANDARD_WINDOW
    assert refused(state, PROMO, T0 + 25 * H).reason is R.AWAITING_USER_REPLY


def test_the_strict_profile_waits_for_a_message_written_after_the_private_reply() -> None:
    state = state_of([comment(T0)])
    state = record_send(state, allowed(state, Intent(comment_id="c1"), T0 + 2 * H), T0 + 2 * H)
    state = apply_event(state, dm(T0 + H), PROFILE)  # arrived late, written before the reply
    state = apply_event(state, echo(T0 + 3 * H), PROFILE)
    assert refused(state, PROMO, T0 + 4 * H, STRICT).reason is R.AWAITING_USER_REPLY
    state = apply_event(state, dm(T0 + 5 * H), PROFILE)
    assert allowed(state, PROMO, T0 + 6 * H, STRICT).until == T0 + 29 * H


def test_an_echo_does_not_lift_the_private_reply_wait() -> None:
    state = state_of([comment(T0)])
    state = record_send(state, allowed(state, Intent(comment_id="c1"), T0 + 2 * H), T0 + 2 * H)
    state = apply_event(state, echo(T0 + 3 * H), PROFILE)
    assert refused(state, PROMO, T0 + 4 * H).reason is R.AWAITING_USER_REPLY


# --- Meta's own verdict ----------------------------------------------------------------------


def test_meta_s_outside_the_window_closes_the_basis_until_the_person_writes() -> None:
    state = state_of([dm(T0)])
    sent = allowed(state, PROMO, T0 + H)
    state = record_meta_refusal(state, sent, T0 + H, 10, 2018278)
    d = refused(state, PROMO, T0 + 2 * H)
    assert d.reason is R.CLOSED_BY_META and "10/2018278" in d.detail
    assert refused(
        state, Intent.optin_request(OptInKind.MARKETING, "sale"), T0 + 2 * H
    ).reason in (
        R.OPTIN_OUTSIDE_WINDOW,
        R.CLOSED_BY_META,
    )
    state = apply_event(state, dm(T0 + 3 * H), PROFILE)
    assert allowed(state, PROMO, T0 + 4 * H).basis is BasisKind.STANDARD_WINDOW


def test_meta_s_refusal_of_a_token_or_a_private_reply_closes_it_for_good() -> None:
    state = state_of([comment(T0), optin(T0, "sale", "tok-1")])
    reply = allowed(state, Intent(comment_id="c1"), T0 + H)
    token = allowed(state, Intent(via_token=OptInKind.MARKETING, topic="sale"), T0 + H)
    state = record_meta_refusal(state, reply, T0 + H, 10, 2018278)
    state = record_meta_refusal(state, token, T0 + H, 10, 2018278)
    state = apply_event(state, dm(T0 + 2 * H), PROFILE)  # a message reopens windows only
    assert refused(state, Intent(comment_id="c1"), T0 + 3 * H).reason is R.CLOSED_BY_META
    d = refused(state, Intent(via_token=OptInKind.MARKETING, topic="sale"), T0 + 3 * H)
    assert d.reason is R.CLOSED_BY_META


def test_the_hand_over_message_itself_goes_after_the_hand_over() -> None:
    state = set_handoff(state_of([dm(T0)]), T0 + H)
    assert refused(state, PROMO, T0 + 2 * H).reason is R.HUMAN_HANDOFF
    handover = Intent(content=Content.SUPPORT, handover=True)
    assert allowed(state, handover, T0 + 2 * H).basis is BasisKind.STANDARD_WINDOW


# --- human agent -----------------------------------------------------------------------------


def test_human_agent_is_never_allowed_for_automation() -> None:
    state = state_of([dm(T0)])
    intent = Intent(content=Content.SUPPORT, tag="HUMAN_AGENT")
    assert refused(state, intent, T0 + H).reason is R.HUMAN_AGENT_NOT_FOR_AUTOMATION
    assert refused(state, intent, T0 + 3 * D).reason is R.HUMAN_AGENT_NOT_FOR_AUTOMATION


def test_automated_support_after_24h_is_refused_not_tagged() -> None:
    d = refused(state_of([dm(T0)]), Intent(content=Content.SUPPORT), T0 + 2 * D)
    assert d.reason is R.WINDOW_CLOSED


def test_a_human_support_reply_uses_human_agent_within_seven_days() -> None:
    d = allowed(state_of([dm(T0)]), HUMAN_SUPPORT, T0 + 6 * D)
    assert d.basis is BasisKind.HUMAN_AGENT
    assert (d.messaging_type, d.tag, d.recipient_field) == ("MESSAGE_TAG", "HUMAN_AGENT", "id")
    assert d.until == T0 + 7 * D


def test_a_human_inside_the_24h_window_uses_the_standard_window() -> None:
    intent = Intent(author=Author.HUMAN, content=Content.SUPPORT, tag="HUMAN_AGENT")
    assert allowed(state_of([dm(T0)]), intent, T0 + H).basis is BasisKind.STANDARD_WINDOW


def test_a_human_support_reply_never_spends_a_one_time_token() -> None:
    state = state_of([dm(T0), one_time(T0, topic="restock")])
    intent = Intent(author=Author.HUMAN, content=Content.SUPPORT, topic="restock")
    assert allowed(state, intent, T0 + 2 * D).basis is BasisKind.HUMAN_AGENT


def test_human_agent_window_closes_seven_days_after_the_latest_message() -> None:
    d = refused(state_of([dm(T0)]), HUMAN_SUPPORT, T0 + 7 * D)
    assert (d.reason, d.next_possible) == (R.HUMAN_AGENT_WINDOW_CLOSED, None)


def test_human_agent_carries_support_only() -> None:
    intent = Intent(author=Author.HUMAN, content=Content.PROMOTIONAL, tag="HUMAN_AGENT")
    assert refused(state_of([dm(T0)]), intent, T0 + 2 * D).reason is R.HUMAN_AGENT_SUPPORT_ONLY


def test_human_agent_can_be_switched_off_in_the_profile() -> None:
    profile = load_profile("instagram:\n  human_agent_enabled: false\n")
    d = refused(state_of([dm(T0)]), HUMAN_SUPPORT, T0 + 2 * D, profile)
    assert d.reason is R.HUMAN_AGENT_DISABLED


def test_a_human_agent_reply_after_a_comment_alone_has_no_basis() -> None:
    d = refused(state_of([comment(T0)]), HUMAN_SUPPORT, T0 + H)
    assert d.reason is R.NO_OPEN_BASIS


# --- message tags ----------------------------------------------------------------------------

UPDATE = Intent(content=Content.NON_PROMOTIONAL, tag="POST_PURCHASE_UPDATE")


def test_a_messenger_tag_carries_a_non_promotional_update_after_24h() -> None:
    d = allowed(state_of([dm(T0, FB)], FB), UPDATE, T0 + 3 * D)
    assert d.basis is BasisKind.MESSAGE_TAG
    assert (d.messaging_type, d.tag) == ("MESSAGE_TAG", "POST_PURCHASE_UPDATE")
    assert d.until == T0 + 7 * D


def test_the_standard_window_is_preferred_over_a_requested_tag() -> None:
    assert allowed(state_of([dm(T0, FB)], FB), UPDATE, T0 + H).basis is BasisKind.STANDARD_WINDOW


def test_a_tag_never_carries_promotional_content() -> None:
    intent = Intent(content=Content.PROMOTIONAL, tag="POST_PURCHASE_UPDATE")
    assert refused(state_of([dm(T0, FB)], FB), intent, T0 + 2 * D).reason is R.PROMOTIONAL_TAG


def test_a_tag_not_in_the_profile_is_refused() -> None:
    assert refused(state_of([dm(T0)]), UPDATE, T0 + 2 * D).reason is R.TAG_NOT_ALLOWED


def test_a_tag_is_refused_after_the_tag_window() -> None:
    d = refused(state_of([dm(T0, FB)], FB), UPDATE, T0 + 7 * D)
    assert (d.reason, d.next_possible) == (R.TAG_WINDOW_CLOSED, None)


# --- gates -----------------------------------------------------------------------------------


def test_an_unreachable_contact_gets_nothing_until_they_write() -> None:
    state = mark_unreachable(state_of([dm(T0), comment(T0)]), T0 + H)
    for intent in (PROMO, Intent(comment_id="c1"), HUMAN_SUPPORT):
        d = refused(state, intent, T0 + 2 * H)
        assert (d.reason, d.next_possible) == (R.CONTACT_UNREACHABLE, None)
    assert open_bases(state, T0 + 2 * H, PROFILE) == []
    older = apply_event(state, dm(T0 + H / 2), PROFILE)  # written before the failed send
    assert refused(older, PROMO, T0 + 2 * H).reason is R.CONTACT_UNREACHABLE
    again = apply_event(state, dm(T0 + 3 * H), PROFILE)
    assert allowed(again, PROMO, T0 + 4 * H).basis is BasisKind.STANDARD_WINDOW


def test_during_a_handoff_automation_waits_and_humans_may_send() -> None:
    state = set_handoff(state_of([dm(T0), comment(T0)]), T0 + H)
    assert refused(state, PROMO, T0 + 2 * H).reason is R.HUMAN_HANDOFF
    assert refused(state, Intent(comment_id="c1"), T0 + 2 * H).reason is R.HUMAN_HANDOFF
    human = Intent(author=Author.HUMAN)
    assert allowed(state, human, T0 + 2 * H).basis is BasisKind.STANDARD_WINDOW
    assert allowed(set_handoff(state, None), PROMO, T0 + 2 * H)


# --- ad referral window ----------------------------------------------------------------------

AD_PROFILE = load_profile("messenger:\n  ad_referral_window: 7d\n")


def test_the_ad_referral_window_is_off_by_default() -> None:
    state = state_of([referral(T0, FB, ad=True)], FB)
    assert refused(state, PROMO, T0 + 2 * D).reason is R.WINDOW_CLOSED


def test_the_first_reply_after_an_ad_click_may_come_within_the_ad_window() -> None:
    state = state_of([referral(T0, FB, ad=True)], FB, AD_PROFILE)
    d = allowed(state, PROMO, T0 + 2 * D, AD_PROFILE)
    assert (d.basis, d.until) == (BasisKind.AD_REFERRAL_WINDOW, T0 + 7 * D)
    state = record_send(state, d, T0 + 2 * D)
    assert refused(state, PROMO, T0 + 3 * D, AD_PROFILE).reason is R.WINDOW_CLOSED


def test_a_non_ad_referral_opens_no_ad_window() -> None:
    state = state_of([referral(T0, FB)], FB, AD_PROFILE)
    assert refused(state, PROMO, T0 + 2 * D, AD_PROFILE).reason is R.WINDOW_CLOSED


# --- open_bases and deadline -----------------------------------------------------------------


def test_open_bases_lists_every_open_basis_with_its_deadline() -> None:
    state = state_of([dm(T0), comment(T0, "c1"), optin(T0), one_time(T0)])
    assert open_bases(state, T0 + H, PROFILE) == [
        OpenBasis(BasisKind.PRIVATE_REPLY, T0 + 7 * D - 36 * H, comment_id="c1"),
        OpenBasis(BasisKind.STANDARD_WINDOW, T0 + 24 * H),
        OpenBasis(BasisKind.HUMAN_AGENT, T0 + 7 * D),
        OpenBasis(BasisKind.ONE_TIME_NOTIFICATION, T0 + 365 * D, topic="restock"),
        OpenBasis(BasisKind.MARKETING_MESSAGE, T0 + 365 * D, topic="sale"),
    ]


def test_open_bases_after_a_private_reply_lists_only_other_comments() -> None:
    state = state_of([dm(T0 - 2 * D), comment(T0, "c1"), comment(T0, "c2")])
    state = record_send(state, allowed(state, Intent(comment_id="c1"), T0 + H), T0 + H)
    assert open_bases(state, T0 + 2 * H, PROFILE) == [
        OpenBasis(BasisKind.PRIVATE_REPLY, T0 + 7 * D - 36 * H, comment_id="c2"),
    ]


def test_open_bases_lists_the_tag_window_on_messenger() -> None:
    kinds = [b.kind for b in open_bases(state_of([dm(T0, FB)], FB), T0 + 2 * D, PROFILE)]
    assert kinds == [BasisKind.HUMAN_AGENT, BasisKind.MESSAGE_TAG]


def test_deadline_is_when_the_chosen_basis_closes() -> None:
    state = state_of([dm(T0)])
    assert deadline(state, PROMO, T0 + H, PROFILE) == T0 + 24 * H
    assert deadline(state, PROMO, T0 + 25 * H, PROFILE) is None


# --- intents ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"content": Content.OPTIN_REQUEST},
        {"optin": OptInKind.ONE_TIME},
        {"comment_id": "c1", "via_token": OptInKind.ONE_TIME},
        {"comment_id": "c1", "tag": "ACCOUNT_UPDATE"},
        {"via_token": OptInKind.MARKETING, "tag": "ACCOUNT_UPDATE"},
    ],
)
def test_a_contradictory_intent_is_a_programming_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Intent(**kwargs)  # type: ignore[arg-type]


def test_a_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        decide(state_of([dm(T0)]), PROMO, T0.replace(tzinfo=None), PROFILE)


def test_rules_for_the_wrong_platform_are_a_programming_error() -> None:
    with pytest.raises(ValueError):
        decide(state_of([dm(T0)]), PROMO, T0, PROFILE.messenger)
    with pytest.raises(ValueError):
        apply_event(ConversationState(platform=FB), dm(T0), PROFILE)
