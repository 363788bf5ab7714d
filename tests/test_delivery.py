"""The delivery parser: Meta's webhook shapes (POLICY.md §2) into typed events.

Payloads follow Meta's documented samples and captured traffic (the shapes in public fixtures
such as Chatwoot's Instagram webhook specs), with made-up ids.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.clock import from_ms, from_seconds
from bot.delivery import (
    NO_TIME,
    MalformedDelivery,
    ParsedDelivery,
    contact_order,
    parse_delivery,
)
from bot.errors import BotError
from bot.events import (
    Attachment,
    Comment,
    CommentVerb,
    Event,
    Message,
    OptIn,
    OptInKind,
    OptInStatus,
    Platform,
    Postback,
    Reaction,
    Read,
    Referral,
    Unknown,
)

IG = "17841400000000001"  # the Instagram professional account
PAGE = "104000000000001"  # the Facebook Page
USER = "6543210987654321"  # an IGSID / PSID
USER2 = "6543210987654322"
T_S = 1776339591  # entry.time of a changes entry: seconds
T_MS = 1776339591123  # messaging timestamps: milliseconds
MID = "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDAwMDAwMDAwMDE6MzQwMjgyMzY2ODQx"
CDN = "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=1790000000000001&signature=abc"


# -- payload builders ------------------------------------------------------------------------


def ig_messaging(
    *items: dict[str, Any], time: int = T_MS, key: str = "messaging"
) -> dict[str, Any]:
    return {"object": "instagram", "entry": [{"id": IG, "time": time, key: list(items)}]}


def page_messaging(*items: dict[str, Any], time: int = T_MS) -> dict[str, Any]:
    return {"object": "page", "entry": [{"id": PAGE, "time": time, "messaging": list(items)}]}


def from_user(body: dict[str, Any], *, ts: int = T_MS, account: str = IG) -> dict[str, Any]:
    return {"sender": {"id": USER}, "recipient": {"id": account}, "timestamp": ts, **body}


def ig_changes(*changes: dict[str, Any], time: int = T_S) -> dict[str, Any]:
    return {"object": "instagram", "entry": [{"id": IG, "time": time, "changes": list(changes)}]}


def ig_comment_value(comment_id: str = "17900000000000001", **extra: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "from": {"id": USER, "username": "someone"},
        "media": {"id": "18000000000000001", "media_product_type": "REELS"},
        "id": comment_id,
        "text": "PRICING",
    }
    value.update(extra)
    return value


def fb_feed(value: dict[str, Any], time: int = T_S) -> dict[str, Any]:
    return {
        "object": "page",
        "entry": [{"id": PAGE, "time": time, "changes": [{"field": "feed", "value": value}]}],
    }


def fb_comment_value(verb: str = "add", **extra: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "from": {"id": USER, "name": "Jane Doe"},
        "post": {"status_type": "added_photos", "is_published": True, "id": f"{PAGE}_555"},
        "message": "price?",
        "post_id": f"{PAGE}_555",
        "comment_id": "555_777",
        "created_time": T_S,
        "item": "comment",
        "parent_id": f"{PAGE}_555",
        "verb": verb,
    }
    value.update(extra)
    return value


def one(body: Any) -> Event:
    parsed = parse_delivery(body)
    assert len(parsed.events) == 1, parsed
    return parsed.events[0]


def unknown(body: Any) -> Unknown:
    parsed = parse_delivery(body)
    assert len(parsed.events) == 1, parsed
    event = parsed.events[0]
    assert isinstance(event, Unknown), event
    assert len(parsed.problems) == 1
    return event


# -- Instagram comments ----------------------------------------------------------------------


def test_instagram_comment_real_shape_uses_id_and_entry_time_in_seconds() -> None:
    parsed = parse_delivery(
        json.dumps(ig_changes({"field": "comments", "value": ig_comment_value()}))
    )
    assert parsed.object == "instagram"
    assert parsed.problems == ()
    assert parsed.events == (
        Comment(
            platform=Platform.INSTAGRAM,
            account_id=IG,
            user_id=USER,
            timestamp=from_seconds(T_S),
            key="comment:17900000000000001",
            comment_id="17900000000000001",
            text="PRICING",
            media_id="18000000000000001",
            username="someone",
            media_product_type="REELS",
        ),
    )


def test_instagram_comment_id_may_be_called_comment_id_as_in_metas_examples() -> None:
    value = ig_comment_value()
    value["comment_id"] = value.pop("id")
    by_comment_id = one(ig_changes({"field": "comments", "value": value}))
    by_id = one(ig_changes({"field": "comments", "value": ig_comment_value()}))
    assert isinstance(by_comment_id, Comment)
    assert by_comment_id == by_id


def test_live_comment_is_marked_live() -> None:
    event = one(ig_changes({"field": "live_comments", "value": ig_comment_value()}))
    assert isinstance(event, Comment)
    assert event.live
    assert event.key == "comment:17900000000000001"


def test_reply_comment_keeps_parent_and_ad_comment_keeps_ad_id() -> None:
    value = ig_comment_value(parent_id="17900000000000000", ad_title="Spring sale")
    value["media"]["ad_id"] = "120200000000000001"
    value["media"]["original_media_id"] = "18000000000000000"
    event = one(ig_changes({"field": "comments", "value": value}))
    assert isinstance(event, Comment)
    assert event.parent_id == "17900000000000000"
    assert event.ad_id == "120200000000000001"


def test_comment_without_from_id_has_no_user_but_still_parses() -> None:
    value = ig_comment_value()
    value["from"] = {"username": "someone"}
    event = one(ig_changes({"field": "comments", "value": value}))
    assert isinstance(event, Comment)
    assert event.user_id is None
    assert event.username == "someone"
    del value["from"]
    event = one(ig_changes({"field": "comments", "value": value}))
    assert isinstance(event, Comment) and event.user_id is None and event.username is None


def test_accounts_own_comment_is_flagged_own() -> None:
    value = ig_comment_value(parent_id="17900000000000000")
    value["from"] = {"id": IG, "username": "the_shop"}
    event = one(ig_changes({"field": "comments", "value": value}))
    assert isinstance(event, Comment) and event.is_own


def test_flat_entry_shape_from_instagram_login_example_is_accepted() -> None:
    body = {
        "object": "instagram",
        "entry": [{"id": IG, "time": T_S, "field": "comments", "value": ig_comment_value()}],
    }
    event = one(body)
    nested = one(ig_changes({"field": "comments", "value": ig_comment_value()}))
    assert event == nested


def test_comment_without_id_is_unknown_with_a_problem_line() -> None:
    value = ig_comment_value()
    del value["id"]
    parsed = parse_delivery(ig_changes({"field": "comments", "value": value}))
    (event,) = parsed.events
    assert isinstance(event, Unknown)
    assert event.reason == "comment without id"
    assert event.field == "comments"
    assert event.account_id == IG
    assert parsed.problems == ("entry[0].changes[0]: comment without id",)


def test_other_instagram_fields_are_unknown_with_field_set() -> None:
    mention = {"field": "mentions", "value": {"media_id": "18000000000000009", "comment_id": "1"}}
    insights = {"field": "story_insights", "value": {"media_id": "1", "impressions": 44}}
    parsed = parse_delivery(ig_changes(mention, insights))
    assert [(type(e), e.field) for e in parsed.events if isinstance(e, Unknown)] == [
        (Unknown, "mentions"),
        (Unknown, "story_insights"),
    ]
    assert all(e.timestamp == from_seconds(T_S) for e in parsed.events)
    assert len(parsed.problems) == 2


def test_a_batch_of_1000_changes_gives_1000_events() -> None:
    changes = [
        {"field": "comments", "value": ig_comment_value(f"179{i:014d}", text=f"WANT {i}")}
        for i in range(1000)
    ]
    parsed = parse_delivery(json.dumps(ig_changes(*changes)).encode())
    assert len(parsed.events) == 1000
    assert all(isinstance(e, Comment) for e in parsed.events)
    assert len({e.key for e in parsed.events}) == 1000
    assert parsed.problems == ()


# -- Facebook Page comments ------------------------------------------------------------------


def test_page_comment_add() -> None:
    event = one(fb_feed(fb_comment_value()))
    assert event == Comment(
        platform=Platform.MESSENGER,
        account_id=PAGE,
        user_id=USER,
        timestamp=from_seconds(T_S),
        key="comment:555_777",
        comment_id="555_777",
        text="price?",
        parent_id=None,  # top-level: Meta names the post as parent
        verb=CommentVerb.ADD,
        username="Jane Doe",
        post_id=f"{PAGE}_555",
    )


def test_page_reply_comment_keeps_its_parent_comment() -> None:
    event = one(fb_feed(fb_comment_value(parent_id="555_700")))
    assert isinstance(event, Comment) and event.parent_id == "555_700"


@pytest.mark.parametrize("verb", ["edited", "remove", "hide", "unhide"])
def test_page_comment_other_verbs_are_keyed_by_verb_and_time(verb: str) -> None:
    value = fb_comment_value(verb, created_time=T_S + 60)
    if verb == "remove":
        del value["message"]
    event = one(fb_feed(value))
    assert isinstance(event, Comment)
    assert event.verb == CommentVerb(verb)
    assert event.key == f"comment:555_777:{verb}:{T_S + 60}"
    assert event.timestamp == from_seconds(T_S + 60)
    assert event.text == ("" if verb == "remove" else "price?")


def test_page_comment_without_created_time_uses_entry_time_in_seconds() -> None:
    value = fb_comment_value()
    del value["created_time"]
    event = one(fb_feed(value, time=T_S + 5))
    assert event.timestamp == from_seconds(T_S + 5)


def test_page_comment_without_verb_or_with_new_verb_is_unknown() -> None:
    value = fb_comment_value()
    del value["verb"]
    assert "verb" in unknown(fb_feed(value)).reason
    event = unknown(fb_feed(fb_comment_value("pin")))
    assert event.field == "feed"
    assert "'pin'" in event.reason


def test_page_feed_items_that_are_not_comments_are_unknown_feed() -> None:
    reaction = {
        "item": "reaction",
        "verb": "add",
        "reaction_type": "like",
        "post_id": f"{PAGE}_555",
        "from": {"id": USER, "name": "Jane Doe"},
        "created_time": T_S,
    }
    event = unknown(fb_feed(reaction))
    assert event.field == "feed"
    assert event.reason == "feed item 'reaction' not handled"
    assert event.platform is Platform.MESSENGER


def test_instagram_fields_on_a_page_are_unknown() -> None:
    body = fb_feed(fb_comment_value())
    body["entry"][0]["changes"][0]["field"] = "comments"
    assert unknown(body).field == "comments"


# -- messaging: messages ---------------------------------------------------------------------


def test_instagram_text_message() -> None:
    event = one(
        ig_messaging(from_user({"message": {"mid": MID, "text": "is there a yearly plan?"}}))
    )
    assert event == Message(
        platform=Platform.INSTAGRAM,
        account_id=IG,
        user_id=USER,
        timestamp=from_ms(T_MS),
        key=f"mid:{MID}",
        mid=MID,
        text="is there a yearly plan?",
    )
    assert event.timestamp.tzinfo is UTC


def test_quick_reply_story_reply_and_reply_to_mid() -> None:
    quick = one(
        ig_messaging(
            from_user(
                {"message": {"mid": MID, "text": "Yearly", "quick_reply": {"payload": "YEARLY"}}}
            )
        )
    )
    assert isinstance(quick, Message) and quick.quick_reply_payload == "YEARLY"
    story = one(
        ig_messaging(
            from_user(
                {
                    "message": {
                        "mid": MID,
                        "text": "love this",
                        "reply_to": {"story": {"id": "18100000000000001", "url": CDN}},
                    }
                }
            )
        )
    )
    assert isinstance(story, Message) and story.is_story_reply
    assert (story.reply_to_story_id, story.reply_to_story_url) == ("18100000000000001", CDN)
    reply = one(
        page_messaging(
            from_user(
                {"message": {"mid": "m_2", "text": "this one", "reply_to": {"mid": "m_1"}}},
                account=PAGE,
            )
        )
    )
    assert isinstance(reply, Message) and reply.reply_to_mid == "m_1"
    assert reply.platform is Platform.MESSENGER and not reply.is_story_reply


def test_story_mention_and_attachments() -> None:
    body = from_user(
        {
            "message": {
                "mid": MID,
                "attachments": [
                    {"type": "story_mention", "payload": {"url": CDN}},
                    {"type": "image", "payload": {"url": CDN + "&2"}},
                    {"type": "fallback", "payload": None},
                ],
            }
        }
    )
    event = one(ig_messaging(body))
    assert isinstance(event, Message)
    assert event.is_story_mention
    assert event.text is None
    assert event.attachments == (
        Attachment("story_mention", CDN),
        Attachment("image", CDN + "&2"),
        Attachment("fallback", None),
    )


def test_message_from_an_ad_keeps_ref_and_ad_id() -> None:
    referral = {
        "ref": "SPRING",
        "ad_id": "120200000000000001",
        "source": "ADS",
        "type": "OPEN_THREAD",
        "ads_context_data": {"ad_title": "Spring", "photo_url": CDN},
    }
    msg = {"mid": MID, "text": "Hi! I saw your ad", "referral": referral}
    event = one(ig_messaging(from_user({"message": msg})))
    assert isinstance(event, Message)
    assert (event.referral_ref, event.referral_ad_id) == ("SPRING", "120200000000000001")


def test_echo_belongs_to_the_recipient_contact() -> None:
    echo = {
        "sender": {"id": IG},
        "recipient": {"id": USER},
        "timestamp": T_MS,
        "message": {"mid": MID, "text": "Here is the link", "is_echo": True},
    }
    event = one(ig_messaging(echo))
    assert isinstance(event, Message)
    assert event.is_echo
    assert (event.account_id, event.user_id) == (IG, USER)
    assert event.key == f"echo:{MID}"


def test_echo_without_entry_id_falls_back_to_sender_as_account() -> None:
    echo = {
        "sender": {"id": IG},
        "recipient": {"id": USER},
        "timestamp": T_MS,
        "message": {"mid": MID, "text": "hi", "is_echo": True},
    }
    event = one({"object": "instagram", "entry": [{"time": T_MS, "messaging": [echo]}]})
    assert (event.account_id, event.user_id) == (IG, USER)


def test_message_without_entry_id_falls_back_to_recipient_as_account() -> None:
    item = from_user({"message": {"mid": MID, "text": "hi"}})
    event = one({"object": "instagram", "entry": [{"time": T_MS, "messaging": [item]}]})
    assert (event.account_id, event.user_id) == (IG, USER)


def test_deleted_and_unsupported_messages() -> None:
    deleted = one(ig_messaging(from_user({"message": {"mid": MID, "is_deleted": True}})))
    assert isinstance(deleted, Message) and deleted.is_deleted
    assert deleted.key == f"deleted:{MID}"
    unsupported = one(ig_messaging(from_user({"message": {"mid": MID, "is_unsupported": True}})))
    assert isinstance(unsupported, Message) and unsupported.is_unsupported
    assert unsupported.key == f"mid:{MID}"


def test_standby_items_are_marked_standby() -> None:
    body = ig_messaging(from_user({"message": {"mid": MID, "text": "hello?"}}), key="standby")
    event = one(body)
    assert isinstance(event, Message) and event.standby
    plain = one(ig_messaging(from_user({"message": {"mid": MID, "text": "hello?"}})))
    assert not plain.standby
    assert event.key == plain.key  # the same event, whichever app owned the thread


def test_message_without_mid_is_unknown_and_the_rest_of_the_delivery_survives() -> None:
    body = ig_messaging(
        from_user({"message": {"text": "no mid"}}),
        from_user({"message": {"mid": MID, "text": "fine"}}),
    )
    parsed = parse_delivery(body)
    bad, good = parsed.events
    assert isinstance(bad, Unknown) and bad.reason == "message without mid"
    assert (bad.account_id, bad.user_id, bad.timestamp) == (IG, USER, from_ms(T_MS))
    assert isinstance(good, Message)
    assert parsed.problems == ("entry[0].messaging[0]: message without mid",)


def test_text_is_kept_whole_and_unicode_survives_the_escaped_wire_form() -> None:
    text = "Привет 👋 مرحبا " + "x" * 5000
    body = ig_messaging(from_user({"message": {"mid": MID, "text": text}}))
    escaped = json.dumps(body).encode()  # Meta sends \uXXXX escapes
    raw = json.dumps(body, ensure_ascii=False).encode()
    for wire in (escaped, raw):
        event = one(wire)
        assert isinstance(event, Message) and event.text == text


# -- messaging: other items ------------------------------------------------------------------


def test_postback_with_mid() -> None:
    item = from_user({"postback": {"mid": MID, "title": "Get the guide", "payload": "GUIDE"}})
    event = one(ig_messaging(item))
    assert event == Postback(
        platform=Platform.INSTAGRAM,
        account_id=IG,
        user_id=USER,
        timestamp=from_ms(T_MS),
        key=f"postback:{MID}",
        payload="GUIDE",
        title="Get the guide",
        mid=MID,
    )


def test_postback_without_mid_is_keyed_by_contact_time_and_payload() -> None:
    item = from_user(
        {"postback": {"title": "Start", "payload": "GET_STARTED", "referral": {"ref": "bio"}}},
        account=PAGE,
    )
    event = one(page_messaging(item))
    assert isinstance(event, Postback)
    assert event.key == f"postback:{PAGE}:{USER}:{T_MS}:GET_STARTED"
    assert event.referral_ref == "bio"


def test_postback_without_payload_is_unknown() -> None:
    assert unknown(ig_messaging(from_user({"postback": {"title": "x"}}))).reason == (
        "postback without payload"
    )


def test_referral() -> None:
    item = from_user(
        {"referral": {"ref": "LINKINBIO", "source": "SHORTLINK", "type": "OPEN_THREAD"}}
    )
    event = one(ig_messaging(item))
    assert event == Referral(
        platform=Platform.INSTAGRAM,
        account_id=IG,
        user_id=USER,
        timestamp=from_ms(T_MS),
        key=f"referral:{IG}:{USER}:{T_MS}:LINKINBIO",
        ref="LINKINBIO",
        source="SHORTLINK",
        type="OPEN_THREAD",
    )
    ad = one(ig_messaging(from_user({"referral": {"source": "ADS", "ad_id": "1202"}})))
    assert isinstance(ad, Referral) and ad.ad_id == "1202" and ad.ref is None


def test_reaction_and_unreaction() -> None:
    react = from_user(
        {"reaction": {"mid": MID, "action": "react", "reaction": "love", "emoji": "❤"}}
    )
    unreact = from_user({"reaction": {"mid": MID, "action": "unreact"}}, ts=T_MS + 1000)
    first, second = parse_delivery(ig_messaging(react, unreact)).events
    assert isinstance(first, Reaction) and isinstance(second, Reaction)
    assert (first.reaction, first.emoji) == ("love", "❤")
    assert first.key == f"reaction:{MID}:{USER}:react:{T_MS}"
    assert second.key == f"reaction:{MID}:{USER}:unreact:{T_MS + 1000}"
    assert second.reaction is None


def test_read_by_mid_and_by_watermark() -> None:
    by_mid = one(ig_messaging(from_user({"read": {"mid": MID}})))
    assert isinstance(by_mid, Read) and by_mid.key == f"read:{IG}:{USER}:{MID}"
    item = from_user({"read": {"watermark": 1776339500000}}, account=PAGE)
    by_watermark = one(page_messaging(item))
    assert isinstance(by_watermark, Read)
    assert by_watermark.watermark == from_ms(1776339500000)
    assert by_watermark.key == f"read:{PAGE}:{USER}:1776339500000"
    assert "read without" in unknown(ig_messaging(from_user({"read": {}}))).reason


def test_one_time_notification_optin() -> None:
    optin = {"type": "one_time_notif_req", "payload": "restock-42", "one_time_notif_token": "OTN1"}
    event = one(page_messaging(from_user({"optin": optin}, account=PAGE)))
    assert event == OptIn(
        platform=Platform.MESSENGER,
        account_id=PAGE,
        user_id=USER,
        timestamp=from_ms(T_MS),
        key=f"optin:one_time_notif_req:OTN1:optin:{T_MS}",
        kind=OptInKind.ONE_TIME,
        topic="restock-42",
        token="OTN1",
    )


def test_marketing_optin_with_frequency_expiry_and_title() -> None:
    optin = {
        "type": "notification_messages",
        "payload": "weekly-deals",
        "notification_messages_token": "MKT1",
        "notification_messages_frequency": "WEEKLY",
        "token_expiry_timestamp": 1807875591000,
        "user_token_status": "NOT_REFRESHED",
        "notification_messages_timezone": "Europe/Berlin",
        "title": "Weekly deals",
    }
    event = one(ig_messaging(from_user({"optin": optin})))
    assert isinstance(event, OptIn)
    assert event.kind is OptInKind.MARKETING
    assert (event.topic, event.token, event.frequency) == ("weekly-deals", "MKT1", "WEEKLY")
    assert event.token_expiry == from_ms(1807875591000)
    assert event.title == "Weekly deals"
    assert event.status is None


def test_stop_and_resume_notifications() -> None:
    def optin(status: str, ts: int) -> dict[str, Any]:
        body = {
            "type": "notification_messages",
            "payload": "weekly-deals",
            "notification_messages_token": "MKT1",
            "notification_messages_status": status,
        }
        return from_user({"optin": body}, ts=ts)

    stop, resume = parse_delivery(
        ig_messaging(optin("STOP_NOTIFICATIONS", T_MS), optin("RESUME_NOTIFICATIONS", T_MS + 9))
    ).events
    assert isinstance(stop, OptIn) and stop.status is OptInStatus.STOP
    assert isinstance(resume, OptIn) and resume.status is OptInStatus.RESUME
    assert stop.key == f"optin:notification_messages:MKT1:STOP_NOTIFICATIONS:{T_MS}"
    assert resume.key == f"optin:notification_messages:MKT1:RESUME_NOTIFICATIONS:{T_MS + 9}"


def test_unknown_optin_type_or_status_is_unknown() -> None:
    checkbox = {"ref": "checkout", "user_ref": "abc"}  # checkbox plugin: no type
    assert "optin type" in unknown(page_messaging(from_user({"optin": checkbox}))).reason
    odd = {"type": "notification_messages", "notification_messages_status": "PAUSE"}
    assert "'PAUSE'" in unknown(ig_messaging(from_user({"optin": odd}))).reason


def test_unknown_messaging_item_is_unknown() -> None:
    delivery = {"mids": ["m_1"], "watermark": T_MS}
    event = unknown(page_messaging(from_user({"delivery": delivery}, account=PAGE)))
    assert event.reason == "no known item (keys: delivery)"
    assert (event.account_id, event.user_id) == (PAGE, USER)
    assert event.key.startswith(f"unknown:{PAGE}:")


# -- timestamps ------------------------------------------------------------------------------


def test_messaging_item_without_timestamp_uses_entry_time_in_ms() -> None:
    item = from_user({"message": {"mid": MID, "text": "hi"}})
    del item["timestamp"]
    assert one(ig_messaging(item, time=T_MS + 7)).timestamp == from_ms(T_MS + 7)


def test_seconds_and_milliseconds_are_told_apart_by_magnitude() -> None:
    in_seconds = one(ig_messaging(from_user({"message": {"mid": MID}}, ts=T_S)))
    in_ms = one(ig_messaging(from_user({"message": {"mid": MID}}, ts=T_S * 1000)))
    assert in_seconds.timestamp == in_ms.timestamp == datetime(2026, 4, 16, 11, 39, 51, tzinfo=UTC)
    comment_s = one(ig_changes({"field": "comments", "value": ig_comment_value()}, time=T_S))
    comment_ms = one(
        ig_changes({"field": "comments", "value": ig_comment_value()}, time=T_S * 1000)
    )
    assert comment_s.timestamp == comment_ms.timestamp == from_seconds(T_S)
    assert comment_s.key == comment_ms.key


def test_no_usable_time_makes_the_item_unknown() -> None:
    item = from_user({"message": {"mid": MID}})
    del item["timestamp"]
    body = {"object": "instagram", "entry": [{"id": IG, "messaging": [item]}]}
    event = unknown(body)
    assert event.reason == "no timestamp"
    assert event.timestamp == NO_TIME
    comment = {
        "object": "instagram",
        "entry": [{"id": IG, "changes": [{"field": "comments", "value": ig_comment_value()}]}],
    }
    assert unknown(comment).reason == "no timestamp"


def test_iso_timestamps_from_test_fixtures_are_not_guessed() -> None:
    item = from_user({"message": {"mid": MID}})
    item["timestamp"] = "2021-09-08T06:34:04+0000"
    event = unknown(ig_messaging(item))
    assert "timestamp" in event.reason
    numeric_text = from_user({"message": {"mid": MID}})
    numeric_text["timestamp"] = str(T_MS)
    assert one(ig_messaging(numeric_text)).timestamp == from_ms(T_MS)


# -- unknown objects, wrong types, malformed bodies ------------------------------------------


def test_unknown_object_gives_one_unknown_per_entry() -> None:
    body = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": {}}]}, {"id": "2"}],
    }
    parsed = parse_delivery(body)
    assert parsed.object == "whatsapp_business_account"
    assert [type(e) for e in parsed.events] == [Unknown, Unknown]
    assert all(
        "whatsapp_business_account" in e.reason for e in parsed.events if isinstance(e, Unknown)
    )
    assert [e.account_id for e in parsed.events] == ["1", "2"]
    assert len(parsed.problems) == 2


def test_missing_object_is_not_malformed() -> None:
    parsed = parse_delivery({"entry": [{"id": IG}]})
    assert parsed.object == ""
    assert isinstance(parsed.events[0], Unknown)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2, 3]", "a list"),
        (b'"entry"', "a string"),
        (b"null", "null"),
        (b'{"object": "instagram"}', "no entry list"),
        (b'{"object": "instagram", "entry": {"id": "1"}}', "not a list"),
        (b'{"object": "instagram", "entry": [\xff]}', "UTF-8"),
        (b'{"object": "instagram", "entry": [NaN]}', "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
        ("[]", "a list"),
    ],
)
def test_malformed_bodies_raise_malformed_delivery(body: bytes | str, words: str) -> None:
    with pytest.raises(MalformedDelivery, match=words) as caught:
        parse_delivery(body)
    assert isinstance(caught.value, BotError)
    assert len(str(caught.value)) < 120


def test_malformed_message_never_echoes_a_huge_body() -> None:
    with pytest.raises(MalformedDelivery) as caught:
        parse_delivery(b'{"entry": "' + b"A" * 1_000_000 + b"}")
    assert len(str(caught.value)) < 120


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda i: i["message"].update(text=42), "text is a number"),
        (lambda i: i["message"].update(is_echo="yes"), "is_echo is a string"),
        (lambda i: i["message"].update(attachments={"type": "image"}), "not a list"),
        (lambda i: i["message"].update(attachments=["image"]), "not an object"),
        (lambda i: i["message"].update(quick_reply="YEARLY"), "not an object"),
        (lambda i: i["message"].update(mid=["m"]), "mid is a list"),
        (lambda i: i.update(sender={"id": {"x": 1}}), "sender.id is an object"),
        (lambda i: i.update(sender="6543210987654321"), "sender is a string"),
        (lambda i: i.update(timestamp=True), "timestamp is true/false"),
        (lambda i: i.update(timestamp=-5), "out of range"),
        (lambda i: i.update(timestamp=10**30), "out of range"),
        (lambda i: i.update(message="hi"), "message is a string"),
    ],
)
def test_wrong_typed_fields_make_that_item_unknown(mutate: Any, words: str) -> None:
    bad = from_user({"message": {"mid": MID, "text": "hi"}})
    mutate(bad)
    good = from_user({"message": {"mid": MID + "2", "text": "ok"}})
    parsed = parse_delivery(json.dumps(ig_messaging(bad, good)))
    first, second = parsed.events
    assert isinstance(first, Unknown), first
    assert words in first.reason
    assert isinstance(second, Message)
    assert len(parsed.problems) == 1 and parsed.problems[0].startswith("entry[0].messaging[0]: ")


@pytest.mark.parametrize(
    "change",
    [
        {"field": "comments", "value": ig_comment_value(text=["PRICING"])},
        {"field": "comments", "value": {**ig_comment_value(), "id": {"value": 1}}},
        {"field": "comments", "value": {**ig_comment_value(), "from": "someone"}},
        {"field": "comments", "value": {**ig_comment_value(), "media": ["1"]}},
        {"field": "comments", "value": "PRICING"},
        {"field": 7, "value": ig_comment_value()},
        ["comments"],
    ],
)
def test_wrong_typed_comment_fields_make_that_comment_unknown(change: Any) -> None:
    parsed = parse_delivery(
        ig_changes(change, {"field": "comments", "value": ig_comment_value("2")})
    )
    first, second = parsed.events
    assert isinstance(first, Unknown)
    assert isinstance(second, Comment)


def test_wrong_typed_entry_parts_are_unknown_not_crashes() -> None:
    body = {
        "object": "instagram",
        "entry": [
            "not an entry",
            {"id": IG, "time": T_MS, "messaging": {"sender": {"id": USER}}},
            {"id": IG, "time": T_S, "changes": "comments"},
            {"id": IG, "time": T_S},
            {
                "id": ["IG"],
                "time": "yesterday",
                "messaging": [from_user({"message": {"mid": MID}})],
            },
        ],
    }
    parsed = parse_delivery(body)
    assert [type(e) for e in parsed.events] == [Unknown, Unknown, Unknown, Unknown, Message]
    assert len(parsed.problems) == 4
    assert parsed.events[4].account_id == IG  # entry.id unusable: recipient.id


def test_integer_ids_are_read_as_text() -> None:
    item = {
        "sender": {"id": 6543210987654321},
        "recipient": {"id": 17841400000000001},
        "timestamp": T_MS,
        "message": {"mid": MID},
    }
    event = one(
        {
            "object": "instagram",
            "entry": [{"id": 17841400000000001, "time": T_MS, "messaging": [item]}],
        }
    )
    assert (event.account_id, event.user_id) == (IG, USER)


def test_problem_lines_stay_short_whatever_the_body_holds() -> None:
    parsed = parse_delivery(ig_changes({"field": "x" * 100_000, "value": {}}))
    assert len(parsed.problems[0]) < 120


def test_unknown_fields_and_extra_keys_never_break_parsing() -> None:
    item = from_user({"message": {"mid": MID, "text": "hi", "brand_new_field": {"a": [1, 2]}}})
    item["also_new"] = 1
    body = ig_messaging(item)
    body["entry"][0]["new_entry_field"] = "x"
    body["new_top_level"] = True
    event = one(body)
    assert isinstance(event, Message) and event.text == "hi"


# -- keys and order --------------------------------------------------------------------------


def test_duplicate_copies_have_the_same_key() -> None:
    body = ig_messaging(from_user({"message": {"mid": MID, "text": "hi"}}))
    first = one(json.dumps(body))
    again = one(json.dumps(body, indent=2, ensure_ascii=False).encode())
    assert first.key == again.key
    # Ad comments are notified twice, in separate deliveries with their own entry.time.
    value = ig_comment_value()
    value["media"]["ad_id"] = "1202"
    copy_a = one(ig_changes({"field": "comments", "value": value}, time=T_S))
    copy_b = one(ig_changes({"field": "comments", "value": value}, time=T_S + 3))
    assert copy_a.key == copy_b.key


def test_different_events_have_different_keys() -> None:
    items = [
        from_user({"message": {"mid": MID, "text": "hi"}}),
        from_user({"message": {"mid": MID, "is_deleted": True}}),
        {
            "sender": {"id": IG},
            "recipient": {"id": USER},
            "timestamp": T_MS,
            "message": {"mid": "m2", "is_echo": True},
        },
        from_user({"postback": {"title": "A", "payload": "A"}}),
        from_user({"postback": {"title": "A", "payload": "A"}}, ts=T_MS + 1),
        from_user({"referral": {"ref": "bio"}}),
        from_user({"reaction": {"mid": MID, "action": "react", "reaction": "love"}}),
        from_user({"reaction": {"mid": MID, "action": "unreact"}}),
        from_user({"read": {"mid": MID}}),
        from_user({"delivery": {"mids": [MID]}}),
        from_user({"delivery": {"mids": ["other"]}}),
    ]
    keys = [e.key for e in parse_delivery(ig_messaging(*items)).events]
    assert len(set(keys)) == len(items), keys


def test_unknown_key_is_the_account_and_a_hash_of_the_item() -> None:
    item = from_user({"delivery": {"mids": [MID]}})
    a = unknown(ig_messaging(item)).key
    b = unknown(json.loads(json.dumps(ig_messaging(item), sort_keys=True))).key
    assert a == b
    prefix, account, digest = a.split(":")
    assert (prefix, account, len(digest)) == ("unknown", IG, 16)


def test_contact_order_sorts_out_of_order_events_per_contact() -> None:
    later = from_user({"message": {"mid": "m3", "text": "third"}}, ts=T_MS + 2000)
    first = from_user({"message": {"mid": "m1", "text": "first"}}, ts=T_MS)
    other = {
        **from_user({"message": {"mid": "m0", "text": "other"}}, ts=T_MS + 5000),
        "sender": {"id": USER2},
    }
    middle = from_user({"postback": {"mid": "m2", "payload": "P"}}, ts=T_MS + 1000)
    comment = ig_changes({"field": "comments", "value": ig_comment_value()})["entry"][0]
    body = ig_messaging(later, other, first, middle)
    body["entry"].append(comment)
    ordered = contact_order(parse_delivery(body).events)
    assert [e.key for e in ordered] == [
        "comment:17900000000000001",  # same contact, earlier (entry.time is whole seconds)
        "mid:m1",
        "postback:m2",
        "mid:m3",
        "mid:m0",  # USER2 sorts after USER
    ]


def test_contact_order_puts_contactless_events_first_and_ties_break_by_key() -> None:
    nobody = ig_comment_value("9")
    del nobody["from"]
    events = parse_delivery(
        ig_changes(
            {"field": "comments", "value": ig_comment_value("2")},
            {"field": "comments", "value": ig_comment_value("1")},
            {"field": "comments", "value": nobody},
        )
    ).events
    assert [e.key for e in contact_order(events)] == ["comment:9", "comment:1", "comment:2"]


def test_mapping_body_is_accepted_as_is() -> None:
    body = ig_messaging(from_user({"message": {"mid": MID, "text": "hi"}}))
    assert (
        parse_delivery(body)
        == parse_delivery(json.dumps(body))
        == parse_delivery(json.dumps(body).encode())
    )
    assert isinstance(parse_delivery(body), ParsedDelivery)


# -- properties ------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)

# Keys the parser looks at, so random structures reach its deep paths.
VOCAB = [
    "object", "entry", "id", "time", "messaging", "standby", "changes", "field", "value",
    "sender", "recipient", "timestamp", "message", "mid", "text", "quick_reply", "payload",
    "reply_to", "story", "url", "attachments", "type", "referral", "ref", "ad_id", "is_echo",
    "is_deleted", "is_unsupported", "postback", "title", "reaction", "action", "emoji", "read",
    "watermark", "optin", "one_time_notif_token", "notification_messages_token",
    "notification_messages_status", "notification_messages_frequency",
    "token_expiry_timestamp", "comment_id", "from", "username", "name", "media",
    "media_product_type", "parent_id", "post_id", "verb", "item", "created_time",
]  # fmt: skip
vocab_values = st.recursive(
    json_scalars
    | st.sampled_from(
        [
            "instagram",
            "page",
            "comments",
            "live_comments",
            "feed",
            "comment",
            "add",
            "remove",
            "react",
            "one_time_notif_req",
            "notification_messages",
            "STOP_NOTIFICATIONS",
            T_MS,
            T_S,
        ]
    ),  # fmt: skip
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(VOCAB), children, max_size=6)
    ),
    max_leaves=40,
)


def _parses_or_rejects(body: Any) -> None:
    try:
        parsed = parse_delivery(body)
    except MalformedDelivery:
        return
    assert len(parsed.problems) == sum(isinstance(e, Unknown) for e in parsed.events)
    for event in parsed.events:
        assert event.timestamp.tzinfo is not None
        assert event.key
    assert not any("parser bug" in p for p in parsed.problems), parsed.problems


@given(json_values)
def test_any_json_value_parses_or_is_malformed(value: Any) -> None:
    _parses_or_rejects(json.dumps(value))
    if isinstance(value, dict):
        _parses_or_rejects(value)


@given(st.sampled_from(["instagram", "page", "user"]), st.lists(vocab_values, max_size=4))
def test_any_delivery_shaped_junk_parses_without_crashing(obj: str, entries: list[Any]) -> None:
    _parses_or_rejects({"object": obj, "entry": entries})
    _parses_or_rejects(json.dumps({"object": obj, "entry": entries}).encode())


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            found += _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _paths(v, (*path, i))
    return found


SAMPLES: list[dict[str, Any]] = [
    ig_changes({"field": "comments", "value": ig_comment_value(parent_id="1")}),
    fb_feed(fb_comment_value()),
    fb_feed(fb_comment_value("remove")),
    ig_messaging(
        from_user(
            {
                "message": {
                    "mid": MID,
                    "text": "hi",
                    "quick_reply": {"payload": "Q"},
                    "reply_to": {"story": {"id": "1", "url": CDN}, "mid": "m0"},
                    "attachments": [{"type": "story_mention", "payload": {"url": CDN}}],
                    "referral": {"ref": "r", "ad_id": "1"},
                    "is_echo": False,
                }
            }
        ),
        from_user({"postback": {"mid": "p1", "title": "T", "payload": "P", "referral": {}}}),
        from_user(
            {"referral": {"ref": "r", "source": "ADS", "type": "OPEN_THREAD", "ad_id": "1"}}
        ),
        from_user({"reaction": {"mid": MID, "action": "react", "reaction": "love", "emoji": "x"}}),
        from_user({"read": {"mid": MID, "watermark": T_MS}}),
        from_user(
            {
                "optin": {
                    "type": "notification_messages",
                    "payload": "t",
                    "notification_messages_token": "k",
                    "notification_messages_frequency": "DAILY",
                    "notification_messages_status": "STOP_NOTIFICATIONS",
                    "token_expiry_timestamp": T_MS,
                    "title": "x",
                }
            }
        ),
        {
            "sender": {"id": IG},
            "recipient": {"id": USER},
            "timestamp": T_MS,
            "message": {"mid": "e", "is_echo": True},
        },
    ),
    {
        "object": "instagram",
        "entry": [{"id": IG, "time": T_S, "field": "comments", "value": ig_comment_value()}],
    },
]


@st.composite
def mutated_delivery(draw: st.DrawFn) -> Any:
    """A realistic delivery with a few nodes replaced by junk or removed: reaches every reader."""
    body = json.loads(json.dumps(draw(st.sampled_from(SAMPLES) | valid_delivery())))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(body) if p]
        if not paths:
            break
        *parent_path, last = draw(st.sampled_from(paths))
        parent = body
        for step in parent_path:
            parent = parent[step]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[last]
        else:
            parent[last] = draw(json_values)
    return body


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(mutated_delivery())
def test_any_damaged_delivery_parses_without_crashing(body: Any) -> None:
    _parses_or_rejects(body)
    _parses_or_rejects(json.dumps(body))


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_are_malformed(raw: bytes) -> None:
    _parses_or_rejects(raw)


texts = st.text(min_size=1, max_size=30)
ids = st.from_regex(r"[0-9]{6,17}", fullmatch=True)


@st.composite
def messaging_item(draw: st.DrawFn, n: int) -> dict[str, Any]:
    """A valid messaging item; `n` makes its mid and time unique within the delivery."""
    ts = T_MS + n * 1000 + draw(st.integers(0, 999))
    user = draw(st.sampled_from([USER, USER2]))
    mid = f"mid{n}"
    kind = draw(
        st.sampled_from(["text", "echo", "postback", "referral", "reaction", "read", "optin"])
    )
    body: dict[str, Any]
    if kind == "text":
        body = {"message": {"mid": mid, "text": draw(texts)}}
    elif kind == "echo":
        return {
            "sender": {"id": IG},
            "recipient": {"id": user},
            "timestamp": ts,
            "message": {"mid": mid, "text": draw(texts), "is_echo": True},
        }
    elif kind == "postback":
        body = {"postback": {"payload": draw(texts), "title": draw(texts)}}
        if draw(st.booleans()):
            body["postback"]["mid"] = mid
    elif kind == "referral":
        body = {"referral": {"ref": draw(texts), "source": "SHORTLINK", "type": "OPEN_THREAD"}}
    elif kind == "reaction":
        body = {"reaction": {"mid": mid, "action": draw(st.sampled_from(["react", "unreact"]))}}
    elif kind == "read":
        body = {"read": {"mid": mid}}
    else:
        body = {
            "optin": {
                "type": "notification_messages",
                "payload": draw(texts),
                "notification_messages_token": f"tok{n}",
                "notification_messages_status": draw(
                    st.sampled_from(["STOP_NOTIFICATIONS", "RESUME_NOTIFICATIONS"])
                ),
            }
        }
    return {"sender": {"id": user}, "recipient": {"id": IG}, "timestamp": ts, **body}


@st.composite
def valid_delivery(draw: st.DrawFn) -> dict[str, Any]:
    entries: list[dict[str, Any]] = []
    n = 0
    for _ in range(draw(st.integers(1, 5))):
        if draw(st.booleans()):
            items = []
            for _ in range(draw(st.integers(1, 4))):
                items.append(draw(messaging_item(n)))
                n += 1
            key = draw(st.sampled_from(["messaging", "standby"]))
            entries.append({"id": IG, "time": T_MS + n * 1000, key: items})
        else:
            changes = []
            for _ in range(draw(st.integers(1, 4))):
                value = {
                    draw(st.sampled_from(["id", "comment_id"])): f"179{n:010d}",
                    "from": {"id": draw(st.sampled_from([USER, USER2])), "username": draw(texts)},
                    "media": {"id": draw(ids), "media_product_type": "FEED"},
                    "text": draw(texts),
                }
                changes.append(
                    {"field": draw(st.sampled_from(["comments", "live_comments"])), "value": value}
                )
                n += 1
            entries.append({"id": IG, "time": T_S + n, "changes": changes})
    return {"object": "instagram", "entry": entries}


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(valid_delivery(), st.randoms(use_true_random=False), st.booleans(), st.booleans())
def test_keys_are_stable_and_order_does_not_matter(
    body: dict[str, Any], rnd: random.Random, ascii_only: bool, sort_keys: bool
) -> None:
    parsed = parse_delivery(json.dumps(body))
    assert parsed.problems == ()
    assert not any(isinstance(e, Unknown) for e in parsed.events)
    keys = [e.key for e in parsed.events]
    assert len(set(keys)) == len(keys)

    reserialised = json.dumps(body, ensure_ascii=ascii_only, sort_keys=sort_keys, indent=1)
    assert parse_delivery(reserialised.encode()).events == parsed.events

    shuffled = json.loads(json.dumps(body))
    rnd.shuffle(shuffled["entry"])
    for entry in shuffled["entry"]:
        for name in ("messaging", "standby", "changes"):
            if name in entry:
                rnd.shuffle(entry[name])
    again = parse_delivery(shuffled)
    assert sorted(e.key for e in again.events) == sorted(keys)
    assert contact_order(again.events) == contact_order(parsed.events)
