"""Send API `message` objects (POLICY.md §3) built from rendered text and a step's options."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from bot.events import OptInKind
from bot.flows.model import Button, QuickReply

__all__ = [
    "BUTTON_TEXT_MAX",
    "image_message",
    "optin_message",
    "text_message",
]

# Meta: a button template's text is at most 640 characters. Not (yet) in the policy profile.
BUTTON_TEXT_MAX: Final = 640


def _quick_replies(items: Sequence[QuickReply]) -> list[dict[str, str]]:
    return [{"content_type": "text", "title": q.title, "payload": q.payload} for q in items]


def _button(b: Button) -> dict[str, str]:
    if b.url is not None:
        return {"type": "web_url", "url": b.url, "title": b.title}
    return {"type": "postback", "payload": b.payload or "", "title": b.title}


def text_message(
    text: str, quick_replies: Sequence[QuickReply] = (), buttons: Sequence[Button] = ()
) -> dict[str, Any]:
    """Text, or a button template when there are buttons; quick replies ride on either."""
    message: dict[str, Any]
    if buttons:
        message = {
            "attachment": {
                "type": "template",
                "payload": {
                    "template_type": "button",
                    "text": text,
                    "buttons": [_button(b) for b in buttons],
                },
            }
        }
    else:
        message = {"text": text}
    if quick_replies:
        message["quick_replies"] = _quick_replies(quick_replies)
    return message


def image_message(url: str, quick_replies: Sequence[QuickReply] = ()) -> dict[str, Any]:
    message: dict[str, Any] = {
        "attachment": {"type": "image", "payload": {"url": url, "is_reusable": True}}
    }
    if quick_replies:
        message["quick_replies"] = _quick_replies(quick_replies)
    return message


def optin_message(
    kind: OptInKind, topic: str, title: str, frequency: str | None = None
) -> dict[str, Any]:
    """The opt-in request attachment; `payload` carries the topic, so the token Meta sends
    back is keyed by it (bot.events.OptIn.topic)."""
    payload: dict[str, Any] = {"template_type": kind.value, "title": title, "payload": topic}
    if kind is OptInKind.MARKETING:
        payload["notification_messages_frequency"] = frequency or "WEEKLY"
    return {"attachment": {"type": "template", "payload": payload}}
