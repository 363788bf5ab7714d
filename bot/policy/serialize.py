"""`ConversationState` to and from JSON-safe dicts (ISO 8601 UTC times) for the store.

Missing keys read as their defaults, so a state saved by an older version still loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from bot.events import OptInKind, OptInStatus, Platform
from bot.policy.state import (
    CommentBasis,
    ConversationState,
    MetaRefusal,
    OptInRequest,
    OptInStatusChange,
    Token,
)

__all__ = ["from_dict", "to_dict"]

VERSION = 1


def _t(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def _dt(value: Any) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(str(value))
    if parsed.tzinfo is None:
        raise ValueError(f"naive time in stored state: {value!r}")
    return parsed.astimezone(UTC)


def _req(value: Any) -> datetime:
    parsed = _dt(value)
    if parsed is None:
        raise ValueError("a required time is missing in stored state")
    return parsed


def to_dict(state: ConversationState) -> dict[str, Any]:
    """A JSON-safe dict of the state."""
    return {
        "v": VERSION,
        "platform": state.platform.value,
        "last_user_message_at": _t(state.last_user_message_at),
        "last_ad_referral_at": _t(state.last_ad_referral_at),
        "last_private_reply_at": _t(state.last_private_reply_at),
        "last_send_at": _t(state.last_send_at),
        "unreachable_since": _t(state.unreachable_since),
        "handoff_since": _t(state.handoff_since),
        "comments": [
            {
                "comment_id": c.comment_id,
                "created_at": _t(c.created_at),
                "live": c.live,
                "private_reply_at": _t(c.private_reply_at),
            }
            for c in state.comments
        ],
        "tokens": [
            {
                "kind": t.kind.value,
                "topic": t.topic,
                "token": t.token,
                "received_at": _t(t.received_at),
                "expires_at": _t(t.expires_at),
                "frequency": t.frequency,
                "stopped": t.stopped,
                "used_at": _t(t.used_at),
                "last_sent_at": _t(t.last_sent_at),
                "status_at": _t(t.status_at),
            }
            for t in state.tokens
        ],
        "optin_requests": [
            {"kind": r.kind.value, "topic": r.topic, "at": _t(r.at)} for r in state.optin_requests
        ],
        "optin_statuses": [
            {"status": c.status.value, "at": _t(c.at), "token": c.token, "topic": c.topic}
            for c in state.optin_statuses
        ],
        "meta_refusals": [
            {
                "kind": r.kind,
                "at": _t(r.at),
                "code": r.code,
                "subcode": r.subcode,
                "comment_id": r.comment_id,
                "token": r.token,
            }
            for r in state.meta_refusals
        ],
    }


def from_dict(data: Mapping[str, Any]) -> ConversationState:
    """The state `to_dict` wrote; raises ValueError/KeyError on a corrupt record."""
    return ConversationState(
        platform=Platform(data["platform"]),
        last_user_message_at=_dt(data.get("last_user_message_at")),
        last_ad_referral_at=_dt(data.get("last_ad_referral_at")),
        last_private_reply_at=_dt(data.get("last_private_reply_at")),
        last_send_at=_dt(data.get("last_send_at")),
        unreachable_since=_dt(data.get("unreachable_since")),
        handoff_since=_dt(data.get("handoff_since")),
        comments=tuple(
            CommentBasis(
                comment_id=str(c["comment_id"]),
                created_at=_req(c["created_at"]),
                live=bool(c.get("live", False)),
                private_reply_at=_dt(c.get("private_reply_at")),
            )
            for c in data.get("comments", ())
        ),
        tokens=tuple(
            Token(
                kind=OptInKind(t["kind"]),
                topic=t.get("topic"),
                token=str(t["token"]),
                received_at=_req(t["received_at"]),
                expires_at=_dt(t.get("expires_at")),
                frequency=t.get("frequency"),
                stopped=bool(t.get("stopped", False)),
                used_at=_dt(t.get("used_at")),
                last_sent_at=_dt(t.get("last_sent_at")),
                status_at=_dt(t.get("status_at")),
            )
            for t in data.get("tokens", ())
        ),
        optin_requests=tuple(
            OptInRequest(OptInKind(r["kind"]), r.get("topic"), _req(r["at"]))
            for r in data.get("optin_requests", ())
        ),
        optin_statuses=tuple(
            OptInStatusChange(
                OptInStatus(c["status"]), _req(c["at"]), c.get("token"), c.get("topic")
            )
            for c in data.get("optin_statuses", ())
        ),
        meta_refusals=tuple(
            MetaRefusal(
                kind=str(r["kind"]),
                at=_req(r["at"]),
                code=r.get("code"),
                subcode=r.get("subcode"),
                comment_id=r.get("comment_id"),
                token=r.get("token"),
            )
            for r in data.get("meta_refusals", ())
        ),
    )
