"""The standard window, human agent and message tags (POLICY.md §1), over real HTTP."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bot.clock import VirtualClock
from bot.simulator import Basis, Reason, Simulator, SimulatorRules

from .conftest import FB, IG, error_of, send, text

Client = TestClient[Any, Any]


async def test_dm_opens_the_window_for_24_hours(
    graph: Client, sim: Simulator, clock: VirtualClock
) -> None:
    await sim.player.dm(IG, "alice", "hi")
    uid = sim.user_id("alice")
    status, data = await send(graph, IG, {"id": uid}, text("hello"))
    assert status == 200 and data["recipient_id"] == uid and data["message_id"].startswith("m_")
    clock.advance(timedelta(hours=23, minutes=59))
    assert (await send(graph, IG, {"id": uid}, text("still open")))[0] == 200
    clock.advance(timedelta(minutes=1))
    status, data = await send(graph, IG, {"id": uid}, text("too late"))
    assert status == 400 and error_of(data) == (10, 2018278)
    assert sim.refused()[-1].reason is Reason.WINDOW_CLOSED


async def test_a_new_dm_resets_the_window(
    graph: Client, sim: Simulator, clock: VirtualClock
) -> None:
    await sim.player.dm(IG, "alice", "hi")
    clock.advance(timedelta(hours=20))
    await sim.player.dm(IG, "alice", "again")
    clock.advance(timedelta(hours=20))
    assert (await send(graph, IG, {"id": sim.user_id("alice")}, text("ok")))[0] == 200


async def test_echoes_of_the_business_never_extend_the_window(
    graph: Client, sim: Simulator, clock: VirtualClock, fake_bot: Any
) -> None:
    await sim.player.dm(IG, "alice", "hi")
    uid = sim.user_id("alice")
    for _ in range(3):
        clock.advance(timedelta(hours=7))
        assert (await send(graph, IG, {"id": uid}, text("ping")))[0] == 200
    await sim.drain()
    assert [d.action for d in sim.deliveries].count("echo") == 3
    clock.advance(timedelta(hours=3))  # 24 h after the user's DM, 3 h after our last message
    status, data = await send(graph, IG, {"id": uid}, text("one more"))
    assert status == 400 and error_of(data) == (10, 2018278)


async def test_every_user_initiated_event_opens_the_window(graph: Client, sim: Simulator) -> None:
    p = sim.player
    await p.story_reply(IG, "u1", "story1", "nice")
    await p.story_mention(IG, "u2", "https://cdn.example/s.jpg")
    await p.quick_reply(IG, "u3", "YEARLY", "Yearly")
    await p.postback(IG, "u4", "GET_STARTED", "Get started")
    await p.referral(IG, "u5", "summer")
    for user in ("u1", "u2", "u3", "u4", "u5"):
        assert (await send(graph, IG, {"id": sim.user_id(user)}, text("hi")))[0] == 200, user


async def test_comments_reads_reactions_and_optins_do_not_open_the_window(
    graph: Client, sim: Simulator, clock: VirtualClock
) -> None:
    p = sim.player
    await p.comment(IG, "bob", "reel1", "PRICING")
    await p.optin(IG, "bob", "notification_messages", "deals", "WEEKLY")
    await p.read(IG, "bob", mid="m_x")
    await p.react(IG, "bob", mid="m_x")
    status, data = await send(graph, IG, {"id": sim.user_id("bob")}, text("hi"))
    assert status == 400 and error_of(data) == (10, 2018278)


async def test_windows_are_per_account(graph: Client, sim: Simulator) -> None:
    await sim.player.dm(IG, "alice", "hi")
    await sim.player.comment(FB, "alice", "post1", "hello page")
    status, data = await send(graph, FB, {"id": sim.user_id("alice")}, text("hi"))
    assert status == 400 and error_of(data) == (10, 2018278)


async def test_unknown_recipient_is_invalid_parameter(graph: Client, sim: Simulator) -> None:
    status, data = await send(graph, IG, {"id": "99999999999"}, text("hi"))
    assert status == 400 and error_of(data) == (100, 2018001)


async def test_human_agent_allowed_at_day_6_refused_at_day_8(
    graph: Client, sim: Simulator, clock: VirtualClock
) -> None:
    await sim.player.dm(IG, "alice", "help")
    uid = sim.user_id("alice")
    tagged = {"messaging_type": "MESSAGE_TAG", "tag": "HUMAN_AGENT"}
    clock.advance(timedelta(days=6))
    status, _ = await send(graph, IG, {"id": uid}, text("agent here"), **tagged)
    assert status == 200 and sim.accepted()[-1].basis is Basis.HUMAN_AGENT
    status, data = await send(graph, IG, {"id": uid}, text("plain"))
    assert status == 400 and error_of(data) == (10, 2018278)
    clock.advance(timedelta(days=2))
    status, data = await send(graph, IG, {"id": uid}, text("too late"), **tagged)
    assert status == 400 and error_of(data) == (10, 2018278)
    assert sim.refused()[-1].reason is Reason.HUMAN_AGENT_EXPIRED


async def test_messenger_tags_within_7_days_on_messenger_only(
    graph: Client, sim: Simulator, clock: VirtualClock
) -> None:
    await sim.player.dm(FB, "carol", "order?")
    await sim.player.dm(IG, "carol", "order?")
    uid = sim.user_id("carol")
    tagged = {"messaging_type": "MESSAGE_TAG", "tag": "POST_PURCHASE_UPDATE"}
    clock.advance(timedelta(days=3))
    assert (await send(graph, FB, {"id": uid}, text("shipped"), **tagged))[0] == 200
    assert sim.accepted()[-1].basis is Basis.MESSAGE_TAG
    status, data = await send(graph, IG, {"id": uid}, text("shipped"), **tagged)
    assert status == 400 and error_of(data)[0] == 100
    clock.advance(timedelta(days=5))
    status, data = await send(graph, FB, {"id": uid}, text("late"), **tagged)
    assert status == 400 and error_of(data) == (10, 2018278)


@pytest.mark.parametrize("rules", [SimulatorRules(human_agent_feature=False)])
async def test_human_agent_without_the_feature_is_a_permission_error(
    graph: Client, sim: Simulator
) -> None:
    await sim.player.dm(IG, "alice", "help")
    tagged = {"messaging_type": "MESSAGE_TAG", "tag": "HUMAN_AGENT"}
    status, data = await send(graph, IG, {"id": sim.user_id("alice")}, text("x"), **tagged)
    assert status == 403 and error_of(data)[0] == 200
