"""Opt-in requests, one-time notifications and marketing messages (POLICY.md §1)."""

from __future__ import annotations

from datetime import datetime, timedelta

from test_policy_helpers import T0, dm, one_time, optin, resume, state_of, stop

from bot.events import OptInKind, Platform
from bot.policy import (
    Allowed,
    BasisKind,
    ConversationState,
    Intent,
    PolicyProfile,
    RefusalReason,
    Refused,
    apply_event,
    decide,
    default_profile,
    load_profile,
    record_send,
)

H = timedelta(hours=1)
D = timedelta(days=1)
R = RefusalReason
PROFILE = default_profile()
FB = Platform.MESSENGER
ASK_MARKETING = Intent.optin_request(OptInKind.MARKETING, "sale")
ASK_ONE_TIME = Intent.optin_request(OptInKind.ONE_TIME, "restock")
VIA_MARKETING = Intent(via_token=OptInKind.MARKETING, topic="sale")
VIA_ONE_TIME = Intent(via_token=OptInKind.ONE_TIME, topic="restock")
# A long window lets a test see when a cap lifts without the window closing first.
LONG = load_profile("instagram:\n  standard_window: 60d\n")


def allowed(
    state: ConversationState, intent: Intent, now: datetime, profile: PolicyProfile = PROFILE
) -> Allowed:
    d = decide(state, intent, now, profile)
    assert isinstance(d, Allowed), d
    return d


def refused(
    state: ConversationState, intent: Intent, now: datetime, profile: PolicyProfile = PROFILE
) -> Refused:
    d = decide(state, intent, now, profile)
    assert isinstance(d, Refused), d
    assert d.detail
    return d


def sent(
    state: ConversationState, intent: Intent, at: datetime, profile: PolicyProfile = PROFILE
) -> ConversationState:
    return record_send(state, allowed(state, intent, at, profile), at)


# --- opt-in requests -------------------------------------------------------------------------


def test_an_optin_request_goes_inside_the_standard_window() -> None:
    d = allowed(state_of([dm(T0)]), ASK_MARKETING, T0 + H)
    assert (d.basis, d.optin, d.topic) == (BasisKind.STANDARD_WINDOW, OptInKind.MARKETING, "sale")
    assert (d.messaging_type, d.until) == ("RESPONSE", T0 + 24 * H)


def test_an_optin_request_is_refused_outside_the_standard_window() -> None:
    d = refused(state_of([dm(T0)]), ASK_ONE_TIME, T0 + 25 * H)
    assert (d.reason, d.next_possible) == (R.OPTIN_OUTSIDE_WINDOW, None)


def test_opting_in_does_not_open_the_standard_window() -> None:
    state = state_of([dm(T0), optin(T0 + 23 * H)])
    assert refused(state, ASK_ONE_TIME, T0 + 25 * H).reason is R.OPTIN_OUTSIDE_WINDOW
    assert refused(state, Intent(), T0 + 25 * H).reason is not None


def test_an_optin_request_per_topic_at_most_once_per_seven_days() -> None:
    state = sent(state_of([dm(T0)]), ASK_MARKETING, T0 + H)
    d = refused(state, ASK_MARKETING, T0 + 2 * H)
    # The window closes before the cooldown ends: only the user can make it possible again.
    assert (d.reason, d.next_possible) == (R.OPTIN_REQUESTED_RECENTLY, None)
    state = apply_event(state, dm(T0 + 6 * D + 12 * H), PROFILE)
    d = refused(state, ASK_MARKETING, T0 + 6 * D + 13 * H)
    assert (d.reason, d.next_possible) == (R.OPTIN_REQUESTED_RECENTLY, T0 + 7 * D + H)
    assert allowed(state, ASK_MARKETING, T0 + 7 * D + H)


def test_the_optin_cooldown_lifts_exactly_seven_days_after_the_request() -> None:
    state = sent(state_of([dm(T0)]), ASK_MARKETING, T0 + H, LONG)
    d = refused(state, ASK_MARKETING, T0 + 2 * H, LONG)
    assert d.next_possible == T0 + H + 7 * D


def test_another_topic_or_kind_is_a_separate_optin_request() -> None:
    state = sent(state_of([dm(T0)]), ASK_MARKETING, T0 + H)
    assert allowed(state, Intent.optin_request(OptInKind.MARKETING, "news"), T0 + 2 * H)
    assert allowed(state, Intent.optin_request(OptInKind.ONE_TIME, "sale"), T0 + 2 * H)


def test_instagram_allows_five_optin_requests_per_day() -> None:
    state = state_of([dm(T0)])
    for i in range(5):
        state = sent(state, Intent.optin_request(OptInKind.ONE_TIME, f"t{i}"), T0 + i * H, LONG)
    d = refused(state, Intent.optin_request(OptInKind.ONE_TIME, "t5"), T0 + 5 * H, LONG)
    assert (d.reason, d.next_possible) == (R.OPTIN_DAILY_LIMIT, T0 + D)


def test_instagram_allows_ten_optin_requests_per_week() -> None:
    state = state_of([dm(T0)])
    for i in range(10):
        ask = Intent.optin_request(OptInKind.MARKETING, f"t{i}")
        state = sent(state, ask, T0 + (i // 4) * D + i * H, LONG)
    d = refused(state, Intent.optin_request(OptInKind.MARKETING, "t10"), T0 + 4 * D, LONG)
    assert (d.reason, d.next_possible) == (R.OPTIN_WEEKLY_LIMIT, T0 + 7 * D)


def test_messenger_has_no_different_topic_caps_by_default() -> None:
    state = state_of([dm(T0, FB)], FB)
    for i in range(7):
        state = sent(state, Intent.optin_request(OptInKind.ONE_TIME, f"t{i}"), T0 + i * H)


def test_an_optin_request_of_a_disabled_kind_is_refused() -> None:
    d = refused(state_of([dm(T0, FB)], FB), ASK_MARKETING, T0 + H)
    assert (d.reason, d.next_possible) == (R.OPTIN_KIND_DISABLED, None)


# --- one-time notifications ------------------------------------------------------------------


def test_a_one_time_notification_goes_once_on_its_token() -> None:
    state = state_of([dm(T0), one_time(T0 + H)])
    d = allowed(state, VIA_ONE_TIME, T0 + 10 * D)
    assert d.basis is BasisKind.ONE_TIME_NOTIFICATION
    assert (d.recipient_field, d.recipient_value, d.token) == (
        "one_time_notif_token",
        "otn-1",
        "otn-1",
    )
    assert (d.messaging_type, d.until) == ("UPDATE", T0 + H + 365 * D)
    state = record_send(state, d, T0 + 10 * D)
    assert refused(state, VIA_ONE_TIME, T0 + 11 * D).reason is R.TOKEN_USED


def test_a_redelivered_optin_does_not_revive_a_used_token() -> None:
    state = sent(state_of([one_time(T0)]), VIA_ONE_TIME, T0 + D)
    state = apply_event(state, one_time(T0), PROFILE)
    assert refused(state, VIA_ONE_TIME, T0 + 2 * D).reason is R.TOKEN_USED


def test_a_one_time_token_expires_at_its_expiry() -> None:
    state = state_of([one_time(T0, expiry=T0 + 3 * D)])
    assert allowed(state, VIA_ONE_TIME, T0 + 2 * D).until == T0 + 3 * D
    assert refused(state, VIA_ONE_TIME, T0 + 3 * D).reason is R.TOKEN_EXPIRED


def test_a_send_needs_a_token_for_its_topic() -> None:
    state = state_of([one_time(T0)])
    assert refused(state, Intent(via_token=OptInKind.ONE_TIME, topic="x"), T0).reason is R.NO_TOKEN
    assert refused(state, Intent(via_token=OptInKind.ONE_TIME), T0).reason is R.NO_TOKEN


def test_one_time_notifications_can_be_switched_off() -> None:
    profile = load_profile("instagram:\n  one_time_notifications: false\n")
    d = refused(state_of([one_time(T0)]), VIA_ONE_TIME, T0 + H, profile)
    assert d.reason is R.OPTIN_KIND_DISABLED


# --- marketing messages ----------------------------------------------------------------------


def test_a_marketing_message_goes_on_a_live_token() -> None:
    d = allowed(state_of([optin(T0, expiry=T0 + 90 * D)]), VIA_MARKETING, T0 + 30 * D)
    assert d.basis is BasisKind.MARKETING_MESSAGE
    assert (d.recipient_field, d.recipient_value) == ("notification_messages_token", "tok-1")
    assert (d.messaging_type, d.until, d.topic) == ("UPDATE", T0 + 90 * D, "sale")


def test_marketing_messages_at_most_one_per_frequency_period() -> None:
    for freq, period in (("DAILY", D), ("WEEKLY", 7 * D), ("MONTHLY", 30 * D)):
        state = sent(state_of([optin(T0, frequency=freq)]), VIA_MARKETING, T0 + H)
        d = refused(state, VIA_MARKETING, T0 + 2 * H)
        assert (d.reason, d.next_possible) == (R.FREQUENCY_LIMIT, T0 + H + period)
        assert allowed(state, VIA_MARKETING, T0 + H + period)


def test_with_two_optins_for_a_topic_the_longest_frequency_holds() -> None:
    state = state_of([optin(T0, frequency="WEEKLY"), optin(T0 + H, token="tok-2")])
    state = sent(state, VIA_MARKETING, T0 + D)
    d = refused(state, VIA_MARKETING, T0 + 2 * D)
    assert (d.reason, d.next_possible) == (R.FREQUENCY_LIMIT, T0 + 8 * D)


def test_a_marketing_token_without_a_known_frequency_is_treated_as_monthly() -> None:
    state = sent(state_of([optin(T0, frequency=None)]), VIA_MARKETING, T0 + H)
    assert refused(state, VIA_MARKETING, T0 + 2 * H).next_possible == T0 + H + 30 * D


def test_a_stop_ends_marketing_messages_at_once_and_resume_restores_them() -> None:
    state = state_of([optin(T0), stop(T0 + D)])
    d = refused(state, VIA_MARKETING, T0 + D)
    assert (d.reason, d.next_possible) == (R.OPTED_OUT, None)
    state = apply_event(state, resume(T0 + 2 * D), PROFILE)
    assert allowed(state, VIA_MARKETING, T0 + 2 * D)


def test_a_stop_by_token_only_stops_that_token() -> None:
    state = state_of([optin(T0), optin(T0, "news", "tok-2"), stop(T0 + D, None, "tok-2")])
    assert allowed(state, VIA_MARKETING, T0 + 2 * D)
    assert refused(state, Intent(via_token=OptInKind.MARKETING, topic="news"), T0 + 2 * D)


def test_a_late_older_resume_never_undoes_a_newer_stop() -> None:
    state = state_of([optin(T0), stop(T0 + 2 * D), resume(T0 + D)])
    assert refused(state, VIA_MARKETING, T0 + 3 * D).reason is R.OPTED_OUT


def test_a_stop_that_arrives_before_its_optin_still_applies() -> None:
    state = state_of([stop(T0 + D, None, "tok-1"), optin(T0)])
    assert refused(state, VIA_MARKETING, T0 + 2 * D).reason is R.OPTED_OUT


def test_a_new_optin_after_a_stop_is_fresh_consent() -> None:
    state = state_of([optin(T0), stop(T0 + D), optin(T0 + 2 * D, token="tok-2")])
    assert allowed(state, VIA_MARKETING, T0 + 3 * D).token == "tok-2"


def test_an_expired_marketing_token_is_refused() -> None:
    state = state_of([optin(T0, expiry=T0 + 5 * D)])
    assert refused(state, VIA_MARKETING, T0 + 5 * D).reason is R.TOKEN_EXPIRED


def test_marketing_messages_are_off_on_messenger_since_2026_02_10() -> None:
    state = state_of([optin(T0, platform=FB)], FB)
    assert refused(state, VIA_MARKETING, T0 + H).reason is R.OPTIN_KIND_DISABLED


# --- automatic routing -----------------------------------------------------------------------


def test_automation_prefers_the_standard_window_over_a_token() -> None:
    state = state_of([dm(T0), optin(T0)])
    assert allowed(state, Intent(topic="sale"), T0 + H).basis is BasisKind.STANDARD_WINDOW


def test_automation_falls_back_to_marketing_then_one_time_for_the_topic() -> None:
    state = state_of([dm(T0), optin(T0), one_time(T0, topic="sale")])
    assert allowed(state, Intent(topic="sale"), T0 + 2 * D).basis is BasisKind.MARKETING_MESSAGE
    state = state_of([dm(T0), one_time(T0, topic="sale")])
    d = allowed(state, Intent(topic="sale"), T0 + 2 * D)
    assert d.basis is BasisKind.ONE_TIME_NOTIFICATION


def test_automation_without_a_topic_never_uses_a_token() -> None:
    assert refused(state_of([dm(T0), optin(T0)]), Intent(), T0 + 2 * D).reason is R.WINDOW_CLOSED


def test_a_fallback_refusal_says_when_the_topic_can_go_next() -> None:
    state = sent(state_of([dm(T0), optin(T0)]), VIA_MARKETING, T0 + 2 * D)
    d = refused(state, Intent(topic="sale"), T0 + 2 * D + H)
    assert (d.reason, d.next_possible) == (R.FREQUENCY_LIMIT, T0 + 3 * D)
