"""The simulator's own reading of Meta's rules: settings, bases, verdicts and error answers.

Written straight from POLICY.md, independently of `bot.policy`, so that the simulator is a
referee: a rule the bot's core gets wrong is refused here instead of being mirrored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum

from bot.errors import BotError
from bot.events import Platform

__all__ = [
    "SimulatorError",
    "Accepted",
    "Basis",
    "Reason",
    "Refused",
    "SimulatorRules",
    "Verdict",
    "refuse",
]


class SimulatorError(BotError):
    """The simulator was driven wrongly (unknown account or action, a missing token to stop);
    the message says what to change in the script or the `/_sim/actions` call."""


_BOTH = frozenset({Platform.INSTAGRAM, Platform.MESSENGER})


class Basis(StrEnum):
    """The ground a send was accepted on (POLICY.md §1)."""

    PRIVATE_REPLY = "private_reply"
    STANDARD_WINDOW = "standard_window"
    HUMAN_AGENT = "human_agent"
    ONE_TIME = "one_time_notification"
    MARKETING = "marketing"
    MESSAGE_TAG = "message_tag"
    PUBLIC_REPLY = "public_reply"


class Reason(StrEnum):
    """Why a request was refused; each maps to one Meta error (POLICY.md §5)."""

    BAD_TOKEN = "bad_token"
    MISSING_TOKEN = "missing_token"
    BAD_PARAMETER = "bad_parameter"
    TEXT_TOO_LONG = "text_too_long"
    UNKNOWN_OBJECT = "unknown_object"
    UNKNOWN_USER = "unknown_user"
    UNAVAILABLE = "user_unavailable"
    NOT_RECEIVING = "user_not_receiving"
    ACCOUNT_RESTRICTED = "account_restricted"
    WINDOW_CLOSED = "window_closed"
    AWAITING_USER_REPLY = "awaiting_user_reply_after_private_reply"
    PRIVATE_REPLY_USED = "private_reply_already_sent"
    PRIVATE_REPLY_EXPIRED = "private_reply_expired"
    LIVE_ENDED = "live_broadcast_ended"
    HUMAN_AGENT_EXPIRED = "human_agent_window_closed"
    HUMAN_AGENT_NOT_GRANTED = "human_agent_feature_missing"
    TAG_EXPIRED = "message_tag_window_closed"
    TAG_NOT_ALLOWED = "tag_not_allowed"
    TOKEN_UNKNOWN = "token_unknown"
    TOKEN_USED = "token_already_used"
    TOKEN_EXPIRED = "token_expired"
    FREQUENCY = "marketing_frequency_exceeded"
    STOPPED = "marketing_stopped"
    OPTIN_OUTSIDE_WINDOW = "optin_request_outside_window"
    OPTIN_DUPLICATE = "optin_request_duplicate"
    OPTIN_LIMIT = "optin_request_limit"
    KIND_DISABLED = "kind_not_available_on_platform"
    DM_CAP = "dm_cap"
    PRIVATE_REPLY_CAP = "private_reply_cap"
    NO_CONSENT = "user_consent_required"
    FAULT_5XX = "fault_5xx"
    FAULT_THROTTLE = "fault_throttle"
    FAULT_TIMEOUT = "fault_timeout"
    FAULT_DROP = "fault_drop"


@dataclass(frozen=True, slots=True)
class SimulatorRules:
    """Every figure the simulator enforces, defaults from POLICY.md (§1, §3, §4)."""

    standard_window: timedelta = timedelta(hours=24)
    human_agent_window: timedelta = timedelta(days=7)
    message_tag_window: timedelta = timedelta(days=7)
    private_reply_window: timedelta = timedelta(days=7)
    one_time_token_ttl: timedelta = timedelta(days=365)
    # POLICY.md gives no figure; the opt-in webhook carries token_expiry_timestamp, so the bot
    # learns the real expiry from the payload either way.
    marketing_token_ttl: timedelta = timedelta(days=180)
    frequency_periods: dict[str, timedelta] = field(
        default_factory=lambda: {
            "DAILY": timedelta(days=1),
            "WEEKLY": timedelta(days=7),
            "MONTHLY": timedelta(days=30),
        }
    )
    optin_duplicate_window: timedelta = timedelta(days=7)
    # Instagram only: 10 different-topic requests per user per 7 days, 5 per day (§1).
    ig_optin_requests_per_week: int = 10
    ig_optin_requests_per_day: int = 5
    # Per-platform switches (§1 "Platform differences"); the seeds offer both kinds on both.
    one_time_platforms: frozenset[Platform] = _BOTH
    marketing_platforms: frozenset[Platform] = _BOTH
    messenger_tags: frozenset[str] = frozenset(
        {"CONFIRMED_EVENT_UPDATE", "POST_PURCHASE_UPDATE", "ACCOUNT_UPDATE", "CUSTOMER_FEEDBACK"}
    )
    human_agent_feature: bool = True
    # "After the private reply, nothing else may be sent" (§1); True also blocks token sends.
    private_reply_blocks_tokens: bool = True
    # True: a DM written before the private reply went out does not open the conversation
    # (the stricter reading of §1); False: it opened the 24 h window like any message.
    private_reply_strict: bool = False
    # Buttons / quick replies in Instagram private replies are disputed (§3).
    instagram_private_reply_text_only: bool = False
    instagram_text_bytes: int = 1000
    messenger_text_chars: int = 2000
    quick_replies_max: int = 13
    quick_reply_title_chars: int = 20
    button_template_max: int = 3
    button_template_text_chars: int = 640
    generic_elements_max: int = 10
    optin_title_chars: int = 65
    public_reply_chars: int = 2200
    dm_cap_per_hour: int = 200
    private_replies_per_hour: int = 750
    live_private_replies_per_second: int = 100
    cap_error_code: int = 613


@dataclass(frozen=True, slots=True)
class Accepted:
    basis: Basis
    user_id: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class Refused:
    """A Graph API error answer; `regain_after` feeds X-Business-Use-Case-Usage."""

    reason: Reason
    code: int
    subcode: int | None
    message: str
    http_status: int = 400
    regain_after: timedelta | None = None
    user_id: str | None = None


Verdict = Accepted | Refused

# (code, subcode, http status) per reason, from POLICY.md §5.
_ERRORS: dict[Reason, tuple[int, int | None, int]] = {
    Reason.BAD_TOKEN: (190, 463, 400),
    Reason.MISSING_TOKEN: (190, None, 400),
    Reason.BAD_PARAMETER: (100, None, 400),
    Reason.TEXT_TOO_LONG: (100, None, 400),
    Reason.UNKNOWN_OBJECT: (100, 33, 400),
    Reason.UNKNOWN_USER: (100, 2018001, 400),
    Reason.UNAVAILABLE: (551, 1545041, 400),
    Reason.NOT_RECEIVING: (10, 2018108, 400),
    Reason.ACCOUNT_RESTRICTED: (10, 1893063, 400),
    Reason.WINDOW_CLOSED: (10, 2018278, 400),
    Reason.AWAITING_USER_REPLY: (10, 2018278, 400),
    Reason.PRIVATE_REPLY_USED: (10, 2534022, 400),
    Reason.PRIVATE_REPLY_EXPIRED: (10, 2534022, 400),
    Reason.LIVE_ENDED: (10, 2534022, 400),
    Reason.HUMAN_AGENT_EXPIRED: (10, 2018278, 400),
    Reason.HUMAN_AGENT_NOT_GRANTED: (200, None, 403),
    Reason.TAG_EXPIRED: (10, 2018278, 400),
    Reason.TAG_NOT_ALLOWED: (100, None, 400),
    Reason.TOKEN_UNKNOWN: (100, None, 400),
    Reason.TOKEN_USED: (10, 2018278, 400),
    Reason.TOKEN_EXPIRED: (10, 2018278, 400),
    Reason.FREQUENCY: (10, 2018278, 400),
    Reason.STOPPED: (10, 2018278, 400),
    Reason.OPTIN_OUTSIDE_WINDOW: (10, 2018278, 400),
    Reason.OPTIN_DUPLICATE: (10, 2018278, 400),
    Reason.OPTIN_LIMIT: (10, 2018278, 400),
    Reason.KIND_DISABLED: (100, None, 400),
    Reason.NO_CONSENT: (230, None, 400),
    Reason.FAULT_5XX: (2, None, 500),
    Reason.FAULT_TIMEOUT: (2, None, 504),
    Reason.FAULT_DROP: (2, None, 0),
}


def refuse(
    reason: Reason,
    message: str,
    *,
    user_id: str | None = None,
    code: int | None = None,
    regain_after: timedelta | None = None,
) -> Refused:
    """Build the refusal Meta would answer for `reason` (throttles pass their own `code`)."""
    if reason in (Reason.DM_CAP, Reason.PRIVATE_REPLY_CAP, Reason.FAULT_THROTTLE):
        return Refused(reason, code or 613, None, message, 400, regain_after, user_id)
    c, sub, status = _ERRORS[reason]
    return Refused(reason, code or c, sub, message, status, regain_after, user_id)
