"""Parse a Send API body and check its shape against Meta's limits (POLICY.md §3).

Shape errors are Meta's error 100 (invalid parameter): the bot must never retry them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bot.events import Platform
from bot.simulator.rules import Reason, Refused, SimulatorRules, refuse

__all__ = ["OptinRequest", "RecipientKind", "SendRequest", "check_message", "parse_send"]

OPTIN_TEMPLATES = ("one_time_notif_req", "notification_messages")
MESSAGING_TYPES = ("RESPONSE", "UPDATE", "MESSAGE_TAG")
SENDER_ACTIONS = ("typing_on", "typing_off", "mark_seen", "react", "unreact")


class RecipientKind(StrEnum):
    ID = "id"
    COMMENT = "comment_id"
    POST = "post_id"
    ONE_TIME = "one_time_notif_token"
    MARKETING = "notification_messages_token"


@dataclass(frozen=True, slots=True)
class OptinRequest:
    """An opt-in request template; `topic` is its `payload` (what the bot keys tokens by)."""

    kind: str
    topic: str
    title: str


@dataclass(frozen=True, slots=True)
class SendRequest:
    recipient_kind: RecipientKind
    recipient: str
    messaging_type: str
    tag: str | None
    message: Mapping[str, Any]
    sender_action: str | None = None
    optin: OptinRequest | None = None


def _bad(message: str) -> Refused:
    return refuse(Reason.BAD_PARAMETER, f"(#100) {message}")


def _maybe_json(value: Any) -> Any:
    """Form-encoded Graph calls carry objects as JSON strings; accept both forms."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def parse_send(body: Mapping[str, Any]) -> SendRequest | Refused:
    """Turn a `/messages` body into a request, or the error 100 Meta would answer."""
    recipient = _maybe_json(body.get("recipient"))
    if not isinstance(recipient, Mapping) or not recipient:
        return _bad("param recipient must be an object with one of id, comment_id, ...")
    keys = [k for k in RecipientKind if recipient.get(k.value) not in (None, "")]
    if len(keys) != 1:
        return _bad("param recipient must name exactly one of " + ", ".join(RecipientKind))
    kind = keys[0]
    messaging_type = str(body.get("messaging_type") or "RESPONSE").upper()
    if messaging_type not in MESSAGING_TYPES:
        return _bad(f"param messaging_type must be one of {', '.join(MESSAGING_TYPES)}")
    tag = body.get("tag")
    tag = str(tag).upper() if tag not in (None, "") else None
    if messaging_type == "MESSAGE_TAG" and tag is None:
        return _bad("param tag is required when messaging_type is MESSAGE_TAG")
    if tag is not None and messaging_type != "MESSAGE_TAG":
        return _bad("param tag needs messaging_type MESSAGE_TAG")
    sender_action = body.get("sender_action")
    message = _maybe_json(body.get("message"))
    if sender_action is not None:
        if sender_action not in SENDER_ACTIONS or message is not None:
            return _bad("param sender_action is invalid or sent together with message")
        return SendRequest(
            kind, str(recipient[kind.value]), messaging_type, tag, {}, sender_action
        )
    if not isinstance(message, Mapping):
        return _bad("param message must be an object")
    return SendRequest(
        kind, str(recipient[kind.value]), messaging_type, tag, message, None, _optin(message)
    )


def _optin(message: Mapping[str, Any]) -> OptinRequest | None:
    attachment = message.get("attachment")
    if not isinstance(attachment, Mapping) or attachment.get("type") != "template":
        return None
    payload = attachment.get("payload")
    if not isinstance(payload, Mapping) or payload.get("template_type") not in OPTIN_TEMPLATES:
        return None
    title = str(payload.get("title") or "")
    topic = str(payload.get("payload") or title or "default")
    return OptinRequest(str(payload["template_type"]), topic, title)


def check_message(
    platform: Platform,
    message: Mapping[str, Any],
    rules: SimulatorRules,
    *,
    private_reply: bool = False,
) -> Refused | None:
    """Meta's size and shape limits; None when the message is well formed."""
    text = message.get("text")
    attachment = message.get("attachment")
    has_text = text not in (None, "")
    if has_text == (attachment is not None):
        return _bad("param message must have exactly one of text or attachment")
    if has_text:
        if not isinstance(text, str):
            return _bad("param message.text must be a string")
        problem = _text_limit(platform, text, rules)
        if problem:
            return refuse(Reason.TEXT_TOO_LONG, f"(#100) {problem}")
    else:
        problem = _attachment(attachment, rules)
        if problem:
            return _bad(problem)
    metadata = message.get("metadata")
    if metadata is not None and (not isinstance(metadata, str) or len(metadata) > 1000):
        return _bad("param message.metadata must be a string of at most 1000 characters")
    quick_replies = message.get("quick_replies")
    if quick_replies is not None:
        problem = _quick_replies(quick_replies, rules)
        if problem:
            return _bad(problem)
    if (
        private_reply
        and platform is Platform.INSTAGRAM
        and rules.instagram_private_reply_text_only
        and (not has_text or quick_replies)
    ):
        return _bad("Instagram private replies accept text only")
    return None


def _text_limit(platform: Platform, text: str, rules: SimulatorRules) -> str | None:
    if platform is Platform.INSTAGRAM:
        size = len(text.encode("utf-8"))
        if size > rules.instagram_text_bytes:
            return f"message.text is {size} bytes; Instagram allows {rules.instagram_text_bytes}"
    elif len(text) > rules.messenger_text_chars:
        return (
            f"message.text is {len(text)} characters; Messenger allows "
            f"{rules.messenger_text_chars}"
        )
    return None


def _attachment(attachment: Any, rules: SimulatorRules) -> str | None:
    if not isinstance(attachment, Mapping) or not isinstance(attachment.get("type"), str):
        return "param message.attachment must be an object with a type"
    payload = attachment.get("payload")
    if attachment["type"] != "template":
        return None if isinstance(payload, Mapping) else "param attachment.payload is required"
    if not isinstance(payload, Mapping):
        return "param attachment.payload must be an object"
    template = payload.get("template_type")
    if template == "button":
        buttons = payload.get("buttons")
        if not isinstance(buttons, list) or not 1 <= len(buttons) <= rules.button_template_max:
            return f"a button template needs 1 to {rules.button_template_max} buttons"
        if len(str(payload.get("text", ""))) > rules.button_template_text_chars:
            return f"button template text over {rules.button_template_text_chars} characters"
    elif template == "generic":
        elements = payload.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= rules.generic_elements_max:
            return f"a generic template needs 1 to {rules.generic_elements_max} elements"
    elif template in OPTIN_TEMPLATES:
        if len(str(payload.get("title") or "")) > rules.optin_title_chars:
            return f"opt-in request title over {rules.optin_title_chars} characters"
        if template == "one_time_notif_req" and not payload.get("title"):
            return "a one_time_notif_req template needs a title"
    elif not isinstance(template, str):
        return "param attachment.payload.template_type is required"
    return None


def _quick_replies(quick_replies: Any, rules: SimulatorRules) -> str | None:
    if not isinstance(quick_replies, list) or not quick_replies:
        return "param message.quick_replies must be a non-empty list"
    if len(quick_replies) > rules.quick_replies_max:
        return f"{len(quick_replies)} quick replies; at most {rules.quick_replies_max}"
    for i, qr in enumerate(quick_replies):
        if not isinstance(qr, Mapping):
            return f"quick_replies[{i}] must be an object"
        if qr.get("content_type", "text") != "text":
            continue
        title = qr.get("title")
        if not isinstance(title, str) or not title or not qr.get("payload"):
            return f"quick_replies[{i}] needs a title and a payload"
        if len(title) > rules.quick_reply_title_chars:
            return f"quick_replies[{i}].title over {rules.quick_reply_title_chars} characters"
    return None
