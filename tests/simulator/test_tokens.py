"""One-time tokens, marketing tokens and opt-in requests (POLICY.md §1)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from bot.clock import VirtualClock
from bot.simulator import Basis, Reason, Simulator

from .conftest import FB, IG, error_of, send, text

Client = TestClient[Any, Any]


def optin_request(kind: str, topic: str, title: str = "Restock alerts") -> dict[str, Any]:
    payload = {"template_type": kind, "title": title, "payload": topic}
    if kind == "notification_messages":
        payload["notification_messages_frequency"] = "WEEKLY"
    return {"attachment": {"type": "template", "payload": payload}}


async def test_one_time_token_is_single_use(
    graph: Client, sim: Simulator, clock: VirtualClock
) -> None:
    d = await sim.player.optin(FB, "alice", "one_time_notif_req", "restock")
    optin = d.payload["entry"][0]["messaging"][0]["optin"]
    assert optin == {
        "type": "one_time_notif_req",
        "payload": "restock",
        "one_time_notif_token": d.token,
    }
    clock.advance(timedelta(days=30))  # long after any window
    status, data = await send(graph, FB, {"one_time_notif_token": d.token or ""}, text("back!"))
    assert status == 200 and data["recipient_id"] == sim.user_id("alice")
    assert sim.accepted()[-1].basis is Basis.ONE_TIME
    status, data = await send(graph, FB, {"one_time_notif_token": d.token or ""}, text("again"))
    assert status == 400 and error_of(data) == (10, 2018278)
    assert sim.refused()[-1].reason is Reason.TOKEN_USED


async def test_unknown_token_or_token_of_another_account_is_refused(
    graph: Client, sim: Simulator
) -> None:
    d = await sim.player.optin(FB, "alice", "one_time_notif_req", "restock")
    assert (
        error_of((await send(graph, FB, {"one_time_notif_token": "nope"}, text("x")))[1])[0] == 100
    )
    status, _ = await send(graph, IG, {"one_time_notif_token": d.token or ""}, text("x"))
    assert status == 400


async def test_marketing_token_honours_frequency(
    graph: Client, sim: Simulator, clock: VirtualClock
) -> None:
    d = await sim.player.optin(IG, "bob", "notification_messages", "deals", "WEEKLY")
    optin = d.payload["entry"][0]["messaging"][0]["optin"]
    assert optin["notification_messages_frequency"] == "WEEKLY"
    assert optin["token_expiry_timestamp"] > d.payload["entry"][0]["time"]
    to = {"notification_messages_token": d.token or ""}
    assert (await send(graph, IG, to, text("deal 1")))[0] == 200
    assert sim.accepted()[-1].basis is Basis.MARKETING
    clock.advance(timedelta(days=6, hours=23))
    status, data = await send(graph, IG, to, text("deal 2"))
    assert status == 400 and error_of(data)[0] == 10
    assert sim.refused()[-1].reason is Reason.FREQUENCY
    clock.advance(timedelta(hours=1))
    assert (await send(graph, IG, to, text("deal 2")))[0] == 200


async def test_stop_ends_marketing_at_once_and_resume_restores(
    graph: Client, sim: Simulator, clock: VirtualClock
) -> None:
    d = await sim.player.optin(IG, "bob", "notification_messages", "deals", "DAILY")
    to = {"notification_messages_token": d.token or ""}
    stop = await sim.player.stop(IG, "bob", "deals")
    status_field = stop.payload["entry"][0]["messaging"][0]["optin"][
        "notification_messages_status"
    ]
    assert status_field == "STOP_NOTIFICATIONS"
    status, data = await send(graph, IG, to, text("deal"))
    assert status == 400 and sim.refused()[-1].reason is Reason.STOPPED
    await sim.player.resume(IG, "bob", "deals")
    assert (await send(graph, IG, to, text("deal")))[0] == 200


async def test_marketing_token_expires(graph: Client, sim: Simulator, clock: VirtualClock) -> None:
    d = await sim.player.optin(IG, "bob", "notification_messages", "deals", "MONTHLY")
    clock.advance(sim.rules.marketing_token_ttl)
    status, _ = await send(graph, IG, {"notification_messages_token": d.token or ""}, text("x"))
    assert status == 400 and sim.refused()[-1].reason is Reason.TOKEN_EXPIRED


async def test_optin_request_outside_the_window_is_refused(
    graph: Client, sim: Simulator, clock: VirtualClock
) -> None:
    await sim.player.dm(IG, "alice", "hi")
    clock.advance(timedelta(hours=25))
    uid = sim.user_id("alice")
    status, data = await send(
        graph, IG, {"id": uid}, optin_request("notification_messages", "deals")
    )
    assert status == 400 and error_of(data) == (10, 2018278)
    assert sim.refused()[-1].reason is Reason.OPTIN_OUTSIDE_WINDOW


async def test_duplicate_optin_request_within_7_days_is_refused(
    graph: Client, sim: Simulator, clock: VirtualClock
) -> None:
    await sim.player.dm(FB, "alice", "hi")
    uid = sim.user_id("alice")
    req = optin_request("one_time_notif_req", "restock")
    assert (await send(graph, FB, {"id": uid}, req))[0] == 200
    assert (
        await send(graph, FB, {"id": uid}, optin_request("one_time_notif_req", "other", "Other"))
    )[0] == 200
    status, _ = await send(graph, FB, {"id": uid}, req)
    assert status == 400 and sim.refused()[-1].reason is Reason.OPTIN_DUPLICATE
    clock.advance(timedelta(days=7))
    await sim.player.dm(FB, "alice", "hi again")
    assert (await send(graph, FB, {"id": uid}, req))[0] == 200


async def test_instagram_allows_5_optin_requests_per_user_per_day(
    graph: Client, sim: Simulator
) -> None:
    await sim.player.dm(IG, "alice", "hi")
    uid = sim.user_id("alice")
    for i in range(5):
        req = optin_request("notification_messages", f"topic{i}", f"Title {i}")
        assert (await send(graph, IG, {"id": uid}, req))[0] == 200
    status, _ = await send(
        graph, IG, {"id": uid}, optin_request("notification_messages", "t5", "T5")
    )
    assert status == 400 and sim.refused()[-1].reason is Reason.OPTIN_LIMIT


async def test_token_send_after_a_private_reply_waits_for_the_user(
    graph: Client, sim: Simulator
) -> None:
    d = await sim.player.optin(IG, "bob", "notification_messages", "deals", "DAILY")
    c = await sim.player.comment(IG, "bob", "reel1", "PRICING")
    assert (await send(graph, IG, {"comment_id": c.comment_id or ""}, text("dm")))[0] == 200
    status, _ = await send(graph, IG, {"notification_messages_token": d.token or ""}, text("x"))
    assert status == 400 and sim.refused()[-1].reason is Reason.AWAITING_USER_REPLY
