"""Meta-shaped webhook deliveries, built exactly as POLICY.md §2 shows them.

Pure functions. Note the units: `entry.time` is seconds for `changes` entries (comments, feed)
and milliseconds for `messaging` entries; `messaging[].timestamp` is milliseconds.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

from bot.clock import to_ms
from bot.events import Platform

__all__ = [
    "encode",
    "fb_comment",
    "ig_comment",
    "messaging",
    "object_of",
    "sign",
]


def object_of(platform: Platform) -> str:
    return "instagram" if platform is Platform.INSTAGRAM else "page"


def encode(payload: dict[str, Any]) -> bytes:
    """Serialise like Meta: escaped unicode and escaped slashes, so a bot that re-serialises
    before checking the signature fails here as it would in production (§2)."""
    text = json.dumps(payload, ensure_ascii=True, separators=(",", ":"))
    return text.replace("/", "\\/").encode("ascii")


def sign(app_secret: str, body: bytes) -> str:
    """`X-Hub-Signature-256`: HMAC-SHA256 of the raw body keyed with the app secret (§2)."""
    digest = hmac.new(app_secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def ig_comment(
    account_id: str,
    *,
    user_id: str,
    username: str,
    comment_id: str,
    media_id: str,
    text: str,
    now: datetime,
    live: bool = False,
    parent_id: str | None = None,
    ad_id: str | None = None,
    product_type: str | None = None,
) -> dict[str, Any]:
    media: dict[str, Any] = {"id": media_id}
    media["media_product_type"] = product_type or ("LIVE" if live else "FEED")
    if ad_id:
        media["ad_id"] = ad_id
    value: dict[str, Any] = {
        "from": {"id": user_id, "username": username},
        "media": media,
        "id": comment_id,
        "text": text,
    }
    if parent_id:
        value["parent_id"] = parent_id
    change = {"field": "live_comments" if live else "comments", "value": value}
    entry = {"id": account_id, "time": int(now.timestamp()), "changes": [change]}
    return {"object": "instagram", "entry": [entry]}


def fb_comment(
    page_id: str,
    *,
    user_id: str,
    name: str,
    comment_id: str,
    post_id: str,
    text: str,
    now: datetime,
    parent_id: str | None = None,
) -> dict[str, Any]:
    seconds = int(now.timestamp())
    value = {
        "from": {"id": user_id, "name": name},
        "post": {"id": post_id, "status_type": "added_photos", "is_published": True},
        "message": text,
        "post_id": post_id,
        "comment_id": comment_id,
        "created_time": seconds,
        "item": "comment",
        "parent_id": parent_id or post_id,
        "verb": "add",
    }
    entry = {"id": page_id, "time": seconds, "changes": [{"field": "feed", "value": value}]}
    return {"object": "page", "entry": [entry]}


def messaging(
    platform: Platform,
    account_id: str,
    *,
    sender: str,
    recipient: str,
    now: datetime,
    item: dict[str, Any],
) -> dict[str, Any]:
    """A delivery of one `messaging[]` item: message, postback, referral, optin, read, ..."""
    ms = to_ms(now)
    event = {"sender": {"id": sender}, "recipient": {"id": recipient}, "timestamp": ms, **item}
    entry = {"id": account_id, "time": ms, "messaging": [event]}
    return {"object": object_of(platform), "entry": [entry]}
