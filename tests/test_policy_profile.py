"""The policy profile: defaults from POLICY.md, YAML overrides, errors that name the key."""

from __future__ import annotations

from dataclasses import fields
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from bot.errors import BotError
from bot.events import OptInKind, Platform
from bot.policy import (
    DEFAULT_PROFILE_PATH,
    MESSENGER_TAGS,
    PlatformProfile,
    ProfileError,
    default_profile,
    format_duration,
    load_profile,
    parse_duration,
    text_fits,
)
from bot.policy.loader import FIELD_READERS, platform_field_names


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
        ("90m", timedelta(minutes=90)),
        ("3600s", timedelta(seconds=3600)),
        ("1h30m", timedelta(minutes=90)),
        (" 2d 12h ", timedelta(days=2, hours=12)),
    ],
)
def test_durations_are_read_like_24h_7d_90m_3600s(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "24", "h", "1.5h", "24 hours", "-1h", "1w", "1h-"])
def test_a_malformed_duration_is_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("d", [timedelta(days=7), timedelta(minutes=90), timedelta(seconds=61)])
def test_format_duration_reads_back(d: timedelta) -> None:
    assert parse_duration(format_duration(d)) == d


def test_defaults_follow_policy_md_for_instagram() -> None:
    ig = default_profile().for_platform(Platform.INSTAGRAM)
    assert ig.platform is Platform.INSTAGRAM
    assert ig.standard_window == timedelta(hours=24)
    assert ig.human_agent_window == timedelta(days=7)
    assert ig.private_reply_window == timedelta(days=7)
    assert ig.live_comment_window == timedelta(hours=1)
    assert ig.ad_referral_window is None
    # Seeds describe both opt-in kinds on Instagram (POLICY.md §1 platform bullet).
    assert ig.one_time_notifications and ig.marketing_messages
    assert ig.message_tags == frozenset()
    assert ig.human_agent_enabled
    assert ig.optin_request_cooldown == timedelta(days=7)
    assert (ig.optin_requests_per_week, ig.optin_requests_per_day) == (10, 5)
    assert ig.tag_window == timedelta(days=7)
    assert (ig.text_max_bytes, ig.text_max_chars) == (1000, None)
    assert (ig.quick_replies_max, ig.quick_reply_title_max) == (13, 20)
    assert (ig.buttons_max, ig.optin_title_max) == (3, 65)
    assert ig.automated_dms_per_hour == 200
    assert ig.private_replies_per_hour == 750
    assert ig.live_private_replies_per_second == 100
    assert ig.calls_per_second == 10
    assert ig.conversations_api_per_second == 2


def test_defaults_follow_policy_md_for_messenger() -> None:
    m = default_profile().for_platform(Platform.MESSENGER)
    assert m.platform is Platform.MESSENGER
    assert m.one_time_notifications
    # Discontinued on Messenger on 2026-02-10.
    assert not m.marketing_messages
    assert m.message_tags == MESSENGER_TAGS
    assert "HUMAN_AGENT" not in m.message_tags
    assert (m.text_max_bytes, m.text_max_chars) == (None, 2000)
    assert m.sends_per_engaged_user_per_day == 200


def test_optin_enabled_follows_the_per_platform_switches() -> None:
    m = default_profile().messenger
    assert m.optin_enabled(OptInKind.ONE_TIME)
    assert not m.optin_enabled(OptInKind.MARKETING)


def test_the_shipped_yaml_documents_exactly_the_defaults() -> None:
    assert load_profile(DEFAULT_PROFILE_PATH) == default_profile()
    data = yaml.safe_load(DEFAULT_PROFILE_PATH.read_text(encoding="utf-8"))
    for platform in Platform:
        assert set(data[platform.value]) == platform_field_names()


def test_every_profile_field_has_a_yaml_reader() -> None:
    names = {f.name for f in fields(PlatformProfile)} - {"platform"}
    assert set(FIELD_READERS) == names == platform_field_names()


def test_overrides_merge_onto_the_defaults() -> None:
    profile = load_profile(
        "instagram:\n  standard_window: 12h\n  one_time_notifications: false\n"
        "messenger:\n  ad_referral_window: 7d\n  message_tags: [ACCOUNT_UPDATE]\n"
    )
    assert profile.instagram.standard_window == timedelta(hours=12)
    assert not profile.instagram.one_time_notifications
    assert profile.instagram.private_reply_window == timedelta(days=7)
    assert profile.messenger.ad_referral_window == timedelta(days=7)
    assert profile.messenger.message_tags == frozenset({"ACCOUNT_UPDATE"})
    assert profile.messenger.text_max_chars == 2000


def test_an_empty_profile_is_the_defaults() -> None:
    assert load_profile("") == default_profile()
    assert load_profile(None) == default_profile()
    assert load_profile({"instagram": None}) == default_profile()


def test_a_profile_file_is_read_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "profile.yaml"
    path.write_text("messenger:\n  calls_per_second: 50\n", encoding="utf-8")
    assert load_profile(path).messenger.calls_per_second == 50
    assert load_profile(str(path)).messenger.calls_per_second == 50


def test_a_null_switches_an_optional_setting_off() -> None:
    profile = load_profile("instagram:\n  optin_requests_per_day: null\n")
    assert profile.instagram.optin_requests_per_day is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "instagram:\n  standard_window: abc\n",
            "instagram.standard_window: expected a duration like 24h",
        ),
        ("instagram:\n  standard_window: 24\n", "instagram.standard_window: expected a duration"),
        ("instagram:\n  standard_window: 0h\n", "instagram.standard_window: expected a duration"),
        ("instagram:\n  standard_windw: 24h\n", "instagram.standard_windw: unknown setting"),
        ("messenger:\n  marketing_messages: maybe\n", "messenger.marketing_messages: expected"),
        ("messenger:\n  calls_per_second: 0\n", "messenger.calls_per_second: expected a whole"),
        ("messenger:\n  calls_per_second: true\n", "messenger.calls_per_second: expected"),
        (
            "messenger:\n  message_tags: ACCOUNT_UPDATE\n",
            "messenger.message_tags: expected a list",
        ),
        ("messenger:\n  message_tags: [account_update]\n", "messenger.message_tags[0]: expected"),
        ("messenger:\n  message_tags: [HUMAN_AGENT]\n", "messenger.message_tags[0]: HUMAN_AGENT"),
        ("whatsapp:\n  standard_window: 24h\n", "whatsapp: unknown platform"),
        ("instagram: 5\n", "instagram: expected a mapping"),
        ("- instagram\n", "expected a mapping"),
    ],
)
def test_a_wrong_key_or_value_raises_profile_error_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(ProfileError) as caught:
        load_profile(text)
    assert message in str(caught.value)


def test_an_unknown_key_suggests_the_closest_setting() -> None:
    with pytest.raises(ProfileError, match="did you mean standard_window"):
        load_profile("instagram:\n  standard_windw: 24h\n")


def test_profile_error_is_a_bot_error_and_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("instagram:\n  tag_window: soon\n", encoding="utf-8")
    with pytest.raises(BotError) as caught:
        load_profile(path)
    assert isinstance(caught.value, ProfileError)
    assert str(caught.value).startswith(f"{path}: instagram.tag_window:")
    assert caught.value.key == "instagram.tag_window"


def test_a_missing_file_or_bad_yaml_raises_profile_error(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(tmp_path / "missing.yaml")
    with pytest.raises(ProfileError, match="not valid YAML at line"):
        load_profile("instagram:\n  a: [\n")


def test_instagram_text_limit_counts_utf8_bytes() -> None:
    ig = default_profile().instagram
    assert text_fits(ig, "a" * 1000)
    assert not text_fits(ig, "a" * 1001)
    assert not text_fits(ig, "é" * 501)  # 1002 bytes, 501 characters


def test_messenger_text_limit_counts_characters() -> None:
    m = default_profile().messenger
    assert text_fits(m, "é" * 2000)
    assert not text_fits(m, "a" * 2001)
