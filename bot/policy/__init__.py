"""The pure policy core: Meta's messaging rules as data, conversation state, and decisions.

No I/O (except `load_profile` reading one file), no clock reads, no globals: every function
takes the state and `now` and returns a value (DESIGN.md "The data path"; POLICY.md §1).
"""

from __future__ import annotations

from bot.policy.decide import deadline, decide, open_bases
from bot.policy.decision import (
    HUMAN_AGENT_TAG,
    Allowed,
    Author,
    BasisKind,
    Content,
    Decision,
    Intent,
    MessagingType,
    OpenBasis,
    RecipientField,
    RefusalReason,
    Refused,
)
from bot.policy.loader import (
    DEFAULT_PROFILE_PATH,
    ProfileError,
    load_profile,
    profile_from_mapping,
)
from bot.policy.profile import (
    MESSENGER_TAGS,
    PlatformProfile,
    PolicyProfile,
    default_profile,
    format_duration,
    parse_duration,
    text_fits,
)
from bot.policy.record import mark_unreachable, record_meta_refusal, record_send, set_handoff
from bot.policy.serialize import from_dict, to_dict
from bot.policy.state import (
    CommentBasis,
    ConversationState,
    MetaRefusal,
    OptInRequest,
    OptInStatusChange,
    Token,
    apply_event,
    prune,
    token_expiry,
)

__all__ = [
    "DEFAULT_PROFILE_PATH",
    "HUMAN_AGENT_TAG",
    "MESSENGER_TAGS",
    "Allowed",
    "Author",
    "BasisKind",
    "CommentBasis",
    "Content",
    "ConversationState",
    "Decision",
    "Intent",
    "MessagingType",
    "MetaRefusal",
    "OpenBasis",
    "OptInRequest",
    "OptInStatusChange",
    "PlatformProfile",
    "PolicyProfile",
    "ProfileError",
    "RecipientField",
    "Refused",
    "RefusalReason",
    "Token",
    "apply_event",
    "deadline",
    "decide",
    "default_profile",
    "format_duration",
    "from_dict",
    "load_profile",
    "mark_unreachable",
    "record_meta_refusal",
    "open_bases",
    "parse_duration",
    "profile_from_mapping",
    "prune",
    "record_send",
    "set_handoff",
    "text_fits",
    "to_dict",
    "token_expiry",
]
