"""Private replies, public replies and profile consent (POLICY.md §1, §3)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from bot.clock import VirtualClock
from bot.simulator import Basis, Reason, Simulator

from .conftest import FB, IG, TOKENS, error_of, send, text

Client = TestClient[Any, Any]


async def test_private_reply_once_per_comment(graph: Client, sim: Simulator) -> None:
    c = await sim.player.comment(IG, "alice", "reel1", "PRICING")
    assert c.comment_id
    status, data = await send(graph, IG, {"comment_id": c.comment_id}, text("here you go"))
    assert status == 200 and data["recipient_id"] == sim.user_id("alice")
    assert sim.accepted()[-1].basis is Basis.PRIVATE_REPLY
    status, data = await send(graph, IG, {"comment_id": c.comment_id}, text("again"))
    assert status == 400 and error_of(data) == (10, 2534022)
    assert sim.refused()[-1].reason is Reason.PRIVATE_REPLY_USED


async def test_private_reply_refused_after_7_days(
    graph: Client, sim: Simulator, clock: VirtualClock
) -> None:
    c = await sim.player.comment(IG, "alice", "reel1", "PRICING")
    assert c.comment_id
    clock.advance(timedelta(days=7))
    status, data = await send(graph, IG, {"comment_id": c.comment_id}, text("late"))
    assert status == 400 and error_of(data) == (10, 2534022)
    assert sim.refused()[-1].reason is Reason.PRIVATE_REPLY_EXPIRED


async def test_nothing_after_a_private_reply_until_the_user_writes_back(
    graph: Client, sim: Simulator, clock: VirtualClock
) -> None:
    c1 = await sim.player.comment(IG, "alice", "reel1", "PRICING")
    c2 = await sim.player.comment(IG, "alice", "reel2", "LINK")
    uid = sim.user_id("alice")
    assert (await send(graph, IG, {"comment_id": c1.comment_id or ""}, text("dm")))[0] == 200
    status, data = await send(graph, IG, {"id": uid}, text("follow-up"))
    assert status == 400 and error_of(data) == (10, 2018278)
    assert sim.refused()[-1].reason is Reason.AWAITING_USER_REPLY
    # a different comment is a separate basis
    assert (await send(graph, IG, {"comment_id": c2.comment_id or ""}, text("dm 2")))[0] == 200
    clock.advance(timedelta(minutes=5))
    await sim.player.dm(IG, "alice", "thanks!")
    assert (await send(graph, IG, {"id": uid}, text("welcome")))[0] == 200


async def test_live_comments_only_while_the_broadcast_runs(graph: Client, sim: Simulator) -> None:
    c1 = await sim.player.live_comment(IG, "alice", "live1", "LINK")
    c2 = await sim.player.live_comment(IG, "bob", "live1", "LINK")
    assert c1.payload["entry"][0]["changes"][0]["field"] == "live_comments"
    assert (await send(graph, IG, {"comment_id": c1.comment_id or ""}, text("link")))[0] == 200
    sim.live_stop(IG, "live1")
    status, data = await send(graph, IG, {"comment_id": c2.comment_id or ""}, text("link"))
    assert status == 400 and error_of(data) == (10, 2534022)
    assert sim.refused()[-1].reason is Reason.LIVE_ENDED


async def test_facebook_private_reply_and_unknown_comment(graph: Client, sim: Simulator) -> None:
    c = await sim.player.comment(FB, "dave", "post9", "info")
    assert (await send(graph, FB, {"comment_id": c.comment_id or ""}, text("info")))[0] == 200
    status, data = await send(graph, FB, {"comment_id": "123_456"}, text("x"))
    assert status == 400 and error_of(data)[0] == 100
    # a comment on another account can't be answered from this one
    ig = await sim.player.comment(IG, "dave", "reel1", "x")
    status, data = await send(graph, FB, {"comment_id": ig.comment_id or ""}, text("x"))
    assert status == 400 and error_of(data)[0] == 100


async def test_public_replies_need_no_basis_and_come_back_as_own_comments(
    graph: Client, sim: Simulator, fake_bot: Any
) -> None:
    c = await sim.player.comment(IG, "alice", "reel1", "PRICING")
    resp = await graph.post(
        f"/v21.0/{c.comment_id}/replies",
        data={"message": "Sent you a DM!", "access_token": TOKENS[IG]},
    )
    reply = await resp.json()
    assert resp.status == 200 and reply["id"].isdigit()
    await sim.drain()
    own = json.loads(fake_bot.received[-1][0])
    value = own["entry"][0]["changes"][0]["value"]
    assert value["from"]["id"] == own["entry"][0]["id"] == IG
    assert value["parent_id"] == c.comment_id
    assert sim.accepted()[-1].basis is Basis.PUBLIC_REPLY
    # the comment's private-reply basis is untouched by the public reply
    assert (await send(graph, IG, {"comment_id": c.comment_id or ""}, text("dm")))[0] == 200
    fb = await sim.player.comment(FB, "erin", "post1", "?")
    resp = await graph.post(
        f"/{fb.comment_id}/comments",
        json={"message": "Answered"},
        headers={"Authorization": f"Bearer {TOKENS[FB]}"},
    )
    assert resp.status == 200 and "_" in (await resp.json())["id"]


async def test_profile_needs_consent_a_comment_alone_is_not_enough(
    graph: Client, sim: Simulator
) -> None:
    await sim.player.comment(IG, "alice", "reel1", "PRICING", username="alice.shop")
    uid = sim.user_id("alice")
    sim.set_profile("alice", follows_business=True)
    headers = {"Authorization": f"Bearer {TOKENS[IG]}"}
    url = f"/v21.0/{uid}?fields=name,username,is_user_follow_business"
    resp = await graph.get(url, headers=headers)
    data = await resp.json()
    assert resp.status == 400 and data["error"]["code"] == 230
    assert "User consent is required" in data["error"]["message"]
    await sim.player.postback(IG, "alice", "GET_STARTED", "Get started")
    resp = await graph.get(url, headers=headers)
    profile = await resp.json()
    assert resp.status == 200
    assert profile == {
        "id": uid,
        "name": "Alice",
        "username": "alice.shop",
        "is_user_follow_business": True,
    }


async def test_subscribed_apps_round_trip(graph: Client, sim: Simulator) -> None:
    headers = {"Authorization": f"Bearer {TOKENS[FB]}"}
    resp = await graph.post(
        f"/v21.0/{FB}/subscribed_apps?subscribed_fields=messages,feed", headers=headers
    )
    assert (await resp.json()) == {"success": True}
    resp = await graph.get(f"/v21.0/{FB}/subscribed_apps", headers=headers)
    data = (await resp.json())["data"]
    assert data[0]["subscribed_fields"] == ["messages", "feed"]
