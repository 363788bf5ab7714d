"""The webhook player: Meta-shaped, signed deliveries (POLICY.md §2) and the control API."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any

from aiohttp.test_utils import TestClient

from bot.clock import VirtualClock, to_ms, to_resolution
from bot.simulator import Simulator, SimulatorError, send_action

from .conftest import FB, IG, SECRET, START, TOKENS, FakeBot, send, text

Client = TestClient[Any, Any]


async def test_signature_is_hmac_sha256_of_the_raw_bytes(
    sim: Simulator, fake_bot: FakeBot
) -> None:
    d = await sim.player.comment(IG, "zoë", "reel1", "prix / price ✓")
    assert d.status == 200 and fake_bot.verified() == [True]
    body, headers = fake_bot.received[0]
    assert body == d.body
    want = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Hub-Signature-256"] == f"sha256={want}"
    # Meta's escaped form: re-serialising the parsed JSON would not match the signature
    assert b"\\u2713" in body and b"\\/" in body
    assert json.dumps(json.loads(body)).encode() != body


async def test_instagram_comment_shape_uses_seconds(sim: Simulator) -> None:
    d = await sim.player.comment(
        IG, "alice", "reel1", "PRICING", username="alice.shop", ad_id="ad9"
    )
    entry = d.payload["entry"][0]
    assert d.payload["object"] == "instagram" and entry["id"] == IG
    assert entry["time"] == int(START.timestamp())
    change = entry["changes"][0]
    assert change["field"] == "comments"
    value = change["value"]
    assert value["id"] == d.comment_id and value["text"] == "PRICING"
    assert value["from"] == {"id": sim.user_id("alice"), "username": "alice.shop"}
    assert value["media"]["id"] == "reel1" and value["media"]["ad_id"] == "ad9"
    assert d.status is None  # no webhook URL: recorded, not posted


async def test_facebook_feed_comment_shape(sim: Simulator) -> None:
    d = await sim.player.comment(FB, "dave", "post1", "hello")
    entry = d.payload["entry"][0]
    assert d.payload["object"] == "page" and entry["time"] == int(START.timestamp())
    value = entry["changes"][0]["value"]
    assert entry["changes"][0]["field"] == "feed"
    assert value["item"] == "comment" and value["verb"] == "add"
    assert value["post_id"] == f"{FB}_post1" and value["comment_id"] == d.comment_id
    assert value["created_time"] == int(START.timestamp()) and value["message"] == "hello"


async def test_messaging_items_use_milliseconds(sim: Simulator, clock: VirtualClock) -> None:
    p = sim.player
    ms = to_ms(START)
    items = [
        (await p.dm(IG, "a", "hi")).payload,
        (await p.story_reply(IG, "a", "st1", "wow")).payload,
        (await p.story_mention(IG, "a", "https://cdn/x.jpg")).payload,
        (await p.quick_reply(IG, "a", "YEARLY", "Yearly")).payload,
        (await p.postback(FB, "a", "START", "Start")).payload,
        (await p.referral(FB, "a", "promo")).payload,
    ]
    for payload in items:
        entry = payload["entry"][0]
        event = entry["messaging"][0]
        assert entry["time"] == ms and event["timestamp"] == ms
        assert (
            event["sender"]["id"] == sim.user_id("a") and event["recipient"]["id"] == entry["id"]
        )
    assert items[1]["entry"][0]["messaging"][0]["message"]["reply_to"]["story"]["id"] == "st1"
    mention = items[2]["entry"][0]["messaging"][0]["message"]["attachments"][0]
    assert mention["type"] == "story_mention"
    assert items[3]["entry"][0]["messaging"][0]["message"]["quick_reply"] == {"payload": "YEARLY"}
    assert (
        items[4]["object"] == "page"
        and items[4]["entry"][0]["messaging"][0]["postback"]["payload"] == "START"
    )


async def test_echo_webhook_matches_the_send(
    graph: Client, sim: Simulator, fake_bot: FakeBot
) -> None:
    await sim.player.dm(IG, "alice", "hi")
    status, data = await send(graph, IG, {"id": sim.user_id("alice")}, text("hello"))
    await sim.drain()
    echo = json.loads(fake_bot.received[-1][0])["entry"][0]["messaging"][0]
    assert echo["sender"]["id"] == IG and echo["recipient"]["id"] == sim.user_id("alice")
    assert echo["message"] == {
        "mid": data["message_id"],
        "is_echo": True,
        "app_id": int(sim.app_id),
        "text": "hello",
    }
    assert all(fake_bot.verified())


async def test_echoes_can_be_switched_off(
    graph: Client, sim: Simulator, fake_bot: FakeBot
) -> None:
    sim.echoes = False
    await sim.player.dm(IG, "alice", "hi")
    await send(graph, IG, {"id": sim.user_id("alice")}, text("hello"))
    await sim.drain()
    assert [d.action for d in sim.deliveries] == ["dm"]


async def test_ids_are_unique_and_deterministic_with_a_seed(clock: VirtualClock) -> None:
    async def run(seed: int) -> list[str]:
        async with Simulator(clock, [(IG, "instagram", "t")], SECRET, seed=seed) as s:
            out = [s.user_id("alice")]
            for i in range(20):
                d = await s.player.comment(IG, f"u{i}", "reel1", "x")
                out += [d.comment_id or "", (await s.player.dm(IG, f"u{i}", "y")).mid or ""]
            return out

    a, b, c = await run(7), await run(7), await run(8)
    assert a == b and a != c and len(set(a)) == len(a)
    assert a[1].startswith("178") and len(a[1]) == 17 and a[2].startswith("m_")


async def test_bot_status_is_reported_and_redelivery_duplicates(
    sim: Simulator, fake_bot: FakeBot
) -> None:
    fake_bot.status = 503
    d = await sim.player.dm(IG, "alice", "hi")
    assert d.status == 503
    fake_bot.status = 200
    again = await sim.player.redeliver(d)
    assert again.status == 200 and fake_bot.received[0][0] == fake_bot.received[1][0]


async def test_read_and_react_point_at_the_last_business_message(
    graph: Client, sim: Simulator
) -> None:
    await sim.player.dm(IG, "alice", "hi")
    _, data = await send(graph, IG, {"id": sim.user_id("alice")}, text("hello"))
    r = await sim.player.read(IG, "alice")
    assert r.payload["entry"][0]["messaging"][0]["read"] == {"mid": data["message_id"]}
    x = await sim.player.react(IG, "alice")
    reaction = x.payload["entry"][0]["messaging"][0]["reaction"]
    assert reaction["mid"] == data["message_id"] and reaction["action"] == "react"


async def test_control_api_drives_actions_and_shows_the_log(
    graph: Client, sim: Simulator, fake_bot: FakeBot
) -> None:
    resp = await graph.post(
        "/_sim/actions",
        json={"action": "comment", "user": "alice", "media": "reel1", "text": "PRICING"},
    )
    result = await resp.json()
    assert resp.status == 200 and result["account_id"] == IG and result["status"] == 200
    cid = result["ids"]["comment_id"]
    await send(graph, IG, {"comment_id": cid}, text("here"))
    await send(graph, IG, {"comment_id": cid}, text("again"))
    log = await (await graph.get("/_sim/log")).json()
    assert [e["accepted"] for e in log] == [True, False]
    assert log[0]["basis"] == "private_reply" and log[1]["reason"] == "private_reply_already_sent"
    assert log[1]["code"] == 10 and log[0]["time"] == to_resolution(START).isoformat()
    resp = await graph.post("/_sim/actions", json={"action": "fly", "user": "alice"})
    assert resp.status == 400 and "unknown action" in (await resp.json())["error"]
    resp = await graph.post("/_sim/actions", json={"action": "dm", "user": "alice"})
    assert resp.status == 400 and "text" in (await resp.json())["error"]


async def test_send_action_from_another_process(graph: Client, sim: Simulator) -> None:
    url = str(graph.make_url("/"))
    action = {"action": "dm", "user": "bob", "text": "hi", "account": FB}
    result = await asyncio.to_thread(send_action, url, action)
    assert result["action"] == "dm" and result["account_id"] == FB
    assert (await send(graph, FB, {"id": sim.user_id("bob")}, text("hey")))[0] == 200
    try:
        await asyncio.to_thread(
            send_action, url, {"action": "dm", "user": "bob", "text": "x", "account": "x"}
        )
    except SimulatorError as exc:
        assert "unknown account" in str(exc)
    else:
        raise AssertionError("expected SimulatorError")
    assert TOKENS[FB] not in json.dumps([d.to_dict() for d in sim.deliveries])
