"""The policy profile: Meta's messaging rules as data (POLICY.md intro, §1, §3, §4).

Meta changes these rules often, so every window, switch, limit and cap the policy core uses
lives here, per platform, with defaults that follow POLICY.md and the seed documents. An operator
overrides them in YAML (`bot.policy.loader.load_profile`); the code never hard-codes a figure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import timedelta

from bot.events import OptInKind, Platform

__all__ = [
    "MESSENGER_TAGS",
    "PlatformProfile",
    "PolicyProfile",
    "default_profile",
    "format_duration",
    "parse_duration",
    "text_fits",
]

# The automation-usable Messenger tags (POLICY.md §1 "other message tags"). HUMAN_AGENT is not
# in this set: it is for humans only and has its own switch, `human_agent_enabled`.
MESSENGER_TAGS = frozenset(
    {"CONFIRMED_EVENT_UPDATE", "POST_PURCHASE_UPDATE", "ACCOUNT_UPDATE", "CUSTOMER_FEEDBACK"}
)

_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"(?:\d+[dhms])+")
_PART = re.compile(r"(\d+)([dhms])")


def parse_duration(text: str) -> timedelta:
    """Parse "24h", "7d", "90m", "3600s" or a sum such as "1h30m"; raise ValueError otherwise."""
    compact = "".join(text.split()).lower()
    if not _DURATION.fullmatch(compact):
        raise ValueError(f"not a duration: {text!r}")
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in _PART.findall(compact)))


def format_duration(d: timedelta) -> str:
    """The shortest exact spelling `parse_duration` reads back ("7d", "90m", "1h30m")."""
    seconds = int(d.total_seconds())
    if seconds == 0:
        return "0s"
    parts = []
    for unit, size in _UNITS.items():
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


@dataclass(frozen=True, slots=True, kw_only=True)
class PlatformProfile:
    """Every rule the policy core applies to one platform (Instagram or Messenger)."""

    platform: Platform

    # --- bases (POLICY.md §1) ---
    standard_window: timedelta = timedelta(hours=24)
    human_agent_window: timedelta = timedelta(days=7)
    human_agent_enabled: bool = True
    private_reply_window: timedelta = timedelta(days=7)
    # Meta: live comments are private-replyable "while the broadcast runs". The bot cannot see
    # the broadcast end, so it assumes a short broadcast: conservative, and an operator setting.
    live_comment_window: timedelta = timedelta(hours=1)
    # Click-to-Messenger / click-to-Direct ads: the first reply may come up to 7 d after the
    # click (POLICY.md §1, last bullet). Off (None) until the operator turns it on.
    ad_referral_window: timedelta | None = None
    # Meta documents one-time notifications for Messenger only; the seed documents and the
    # product offer them on Instagram too, so both default on (POLICY.md §1 platform bullet).
    one_time_notifications: bool = True
    marketing_messages: bool = True
    # Automation-usable message tags; never HUMAN_AGENT (see `human_agent_enabled`).
    message_tags: frozenset[str] = frozenset()
    tag_window: timedelta = timedelta(days=7)
    # Opt-in tokens without an expiry are treated as valid for this long after receipt
    # (POLICY.md §1: one-time tokens are valid ≤ 1 year).
    token_max_age: timedelta = timedelta(days=365)
    # A basis counts as closed this long before it closes: a send decided just before the
    # edge reaches Meta after it (the Graph call may take its 10 s timeout, and clocks skew),
    # and Meta refuses it (10/2018278). At least the Graph timeout plus clock skew.
    send_margin: timedelta = timedelta(seconds=15)
    # Instagram comment webhooks carry only the time Meta *sent* the notification, and Meta
    # retries a failed delivery for up to 36 h (POLICY.md §2): a comment may be that much
    # older than its webhook says, so its 7-day private-reply window is counted that much
    # shorter. Zero where the comment carries its own creation time (Facebook Pages).
    comment_time_margin: timedelta = timedelta(hours=36)
    # After a private reply nothing else may go until the user writes back (POLICY.md §1).
    # A DM the user sent on their own before the private reply went out opens the 24 h
    # window like any message; False (the default) answers it. True is the stricter reading:
    # only a message written after the private reply opens the conversation.
    private_reply_strict: bool = False
    # Send a `metadata` naming the outbox row with each message: Meta hands it back on the
    # echo, so a send whose outcome was unknown is reconciled by its own id. Documented for
    # Messenger's Send API; off on Instagram until Meta documents it there.
    echo_metadata: bool = False

    # --- opt-in requests (POLICY.md §1) ---
    optin_request_cooldown: timedelta = timedelta(days=7)
    optin_requests_per_week: int | None = 10
    optin_requests_per_day: int | None = 5

    # --- message shape (POLICY.md §3) ---
    text_max_bytes: int | None = None
    text_max_chars: int | None = None
    quick_replies_max: int = 13
    quick_reply_title_max: int = 20
    buttons_max: int = 3
    optin_title_max: int = 65

    # --- caps (POLICY.md §4) ---
    automated_dms_per_hour: int = 200
    private_replies_per_hour: int = 750
    live_private_replies_per_second: int = 100
    # Meta allows 100-300 Send API calls/s; 10 keeps one self-hosted account far from any
    # throttle while still draining a viral post's queue within minutes.
    calls_per_second: int = 10
    conversations_api_per_second: int = 2
    sends_per_engaged_user_per_day: int | None = None

    def optin_enabled(self, kind: OptInKind) -> bool:
        """Whether this platform offers the opt-in kind (a per-platform switch, POLICY.md §1)."""
        if kind is OptInKind.ONE_TIME:
            return self.one_time_notifications
        return self.marketing_messages


def _instagram() -> PlatformProfile:
    return PlatformProfile(
        platform=Platform.INSTAGRAM,
        one_time_notifications=True,
        marketing_messages=True,
        message_tags=frozenset(),
        text_max_bytes=1000,
    )


def _messenger() -> PlatformProfile:
    return PlatformProfile(
        platform=Platform.MESSENGER,
        one_time_notifications=True,
        # Discontinued on Messenger on 2026-02-10 (POLICY.md intro).
        marketing_messages=False,
        message_tags=MESSENGER_TAGS,
        # Meta publishes the daily/weekly different-topic caps for Instagram only.
        optin_requests_per_week=None,
        optin_requests_per_day=None,
        text_max_chars=2000,
        sends_per_engaged_user_per_day=200,
        # Page comment webhooks carry the comment's own `created_time` (POLICY.md §2).
        comment_time_margin=timedelta(0),
        echo_metadata=True,
    )


@dataclass(frozen=True, slots=True)
class PolicyProfile:
    """One `PlatformProfile` per platform."""

    instagram: PlatformProfile = field(default_factory=_instagram)
    messenger: PlatformProfile = field(default_factory=_messenger)

    def for_platform(self, platform: Platform) -> PlatformProfile:
        return self.instagram if platform is Platform.INSTAGRAM else self.messenger

    def with_platform(self, profile: PlatformProfile) -> PolicyProfile:
        """A copy with one platform's rules replaced (handy in tests and the loader)."""
        if profile.platform is Platform.INSTAGRAM:
            return replace(self, instagram=profile)
        return replace(self, messenger=profile)


def default_profile() -> PolicyProfile:
    """The shipped defaults; `default_profile.yaml` documents the same values."""
    return PolicyProfile()


def text_fits(profile: PlatformProfile, text: str) -> bool:
    """Whether a text message is within the platform's limit (POLICY.md §3).

    Instagram counts UTF-8 bytes (sources conflict; bytes is the stricter reading), Messenger
    counts characters.
    """
    if profile.text_max_bytes is not None and len(text.encode("utf-8")) > profile.text_max_bytes:
        return False
    return profile.text_max_chars is None or len(text) <= profile.text_max_chars
