"""Message shape limits, caps, unreachable users, tokens and request forms (POLICY.md §3-§5)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bot.clock import VirtualClock
from bot.simulator import Basis, Reason, Simulator, SimulatorRules

from .conftest import FB, IG, TOKENS, error_of, send, text

Client = TestClient[Any, Any]


async def _open(sim: Simulator, account: str, user: str = "alice") -> dict[str, str]:
    await sim.player.dm(account, user, "hi")
    return {"id": sim.user_id(user)}


async def test_instagram_text_limit_is_1000_utf8_bytes(graph: Client, sim: Simulator) -> None:
    to = await _open(sim, IG)
    assert (await send(graph, IG, to, text("é" * 500)))[0] == 200  # 1000 bytes
    status, data = await send(graph, IG, to, text("é" * 501))  # 501 characters, 1002 bytes
    assert status == 400 and error_of(data)[0] == 100
    assert sim.refused()[-1].reason is Reason.TEXT_TOO_LONG


async def test_messenger_text_limit_is_2000_characters(graph: Client, sim: Simulator) -> None:
    to = await _open(sim, FB)
    assert (await send(graph, FB, to, text("é" * 2000)))[0] == 200
    assert (await send(graph, FB, to, text("a" * 2001)))[0] == 400


@pytest.mark.parametrize(
    "message",
    [
        {
            "text": "pick",
            "quick_replies": [{"content_type": "text", "title": "x", "payload": "X"}] * 14,
        },
        {
            "text": "pick",
            "quick_replies": [{"content_type": "text", "title": "x" * 21, "payload": "X"}],
        },
        {
            "attachment": {
                "type": "template",
                "payload": {
                    "template_type": "button",
                    "text": "choose",
                    "buttons": [{"type": "postback", "title": "b", "payload": "B"}] * 4,
                },
            }
        },
        {"text": "both", "attachment": {"type": "image", "payload": {"url": "https://x"}}},
        {},
    ],
    ids=["14-quick-replies", "long-title", "4-buttons", "text-and-attachment", "empty"],
)
async def test_bad_message_shapes_are_error_100(
    graph: Client, sim: Simulator, message: dict[str, Any]
) -> None:
    to = await _open(sim, IG)
    status, data = await send(graph, IG, to, message)
    assert status == 400 and error_of(data)[0] == 100


async def test_13_quick_replies_and_3_buttons_are_fine(graph: Client, sim: Simulator) -> None:
    to = await _open(sim, IG)
    qrs = [{"content_type": "text", "title": "x" * 20, "payload": "X"}] * 13
    assert (await send(graph, IG, to, {"text": "pick", "quick_replies": qrs}))[0] == 200
    buttons = {"template_type": "button", "text": "t", "buttons": [{"type": "postback"}] * 3}
    message = {"attachment": {"type": "template", "payload": buttons}}
    assert (await send(graph, IG, to, message))[0] == 200


@pytest.mark.parametrize("rules", [SimulatorRules(dm_cap_per_hour=3)])
async def test_dm_cap_gives_613_with_time_to_regain_access(
    graph: Client, sim: Simulator, clock: VirtualClock
) -> None:
    to = await _open(sim, IG)
    for _ in range(3):
        assert (await send(graph, IG, to, text("x")))[0] == 200
        clock.advance(timedelta(minutes=10))
    resp = await graph.post(
        f"/v21.0/{IG}/messages",
        json={"recipient": to, "message": text("over")},
        headers={"Authorization": f"Bearer {TOKENS[IG]}"},
    )
    assert resp.status == 400 and error_of(await resp.json())[0] == 613
    usage = json.loads(resp.headers["X-Business-Use-Case-Usage"])
    assert usage[IG][0]["estimated_time_to_regain_access"] == 30
    assert sim.refused()[-1].reason is Reason.DM_CAP
    tagged = {"messaging_type": "MESSAGE_TAG", "tag": "HUMAN_AGENT"}
    assert (await send(graph, IG, to, text("human"), **tagged))[0] == 200  # not capped
    clock.advance(timedelta(minutes=30))
    assert (await send(graph, IG, to, text("again")))[0] == 200


@pytest.mark.parametrize("rules", [SimulatorRules(private_replies_per_hour=2)])
async def test_private_reply_cap(graph: Client, sim: Simulator) -> None:
    comments = [await sim.player.comment(IG, f"u{i}", "reel1", "LINK") for i in range(3)]
    statuses = [
        (await send(graph, IG, {"comment_id": c.comment_id or ""}, text("x")))[0] for c in comments
    ]
    assert statuses == [200, 200, 400]
    assert sim.refused()[-1].reason is Reason.PRIVATE_REPLY_CAP and sim.refused()[-1].code == 613


async def test_unavailable_user_gives_551(graph: Client, sim: Simulator) -> None:
    to = await _open(sim, IG)
    sim.make_unavailable("alice")
    status, data = await send(graph, IG, to, text("x"))
    assert status == 400 and error_of(data) == (551, 1545041)
    c = await sim.player.comment(IG, "alice", "reel1", "x")
    status, data = await send(graph, IG, {"comment_id": c.comment_id or ""}, text("x"))
    assert error_of(data) == (551, 1545041)


async def test_blocked_user_and_restricted_account(graph: Client, sim: Simulator) -> None:
    to = await _open(sim, IG)
    sim.make_not_receiving("alice")
    assert error_of((await send(graph, IG, to, text("x")))[1]) == (10, 2018108)
    sim.make_not_receiving("alice", False)
    sim.restrict(IG)
    assert error_of((await send(graph, IG, to, text("x")))[1]) == (10, 1893063)


async def test_wrong_or_missing_token_gives_190(graph: Client, sim: Simulator) -> None:
    to = await _open(sim, IG)
    status, data = await send(graph, IG, to, text("x"), token="wrong")
    assert status == 400 and error_of(data) == (190, 463)
    assert sim.refused()[-1].reason is Reason.BAD_TOKEN
    status, data = await send(graph, IG, to, text("x"), token=TOKENS[FB])
    assert error_of(data)[0] == 190
    resp = await graph.post(f"/{IG}/messages", json={"recipient": to, "message": text("x")})
    assert error_of(await resp.json())[0] == 190
    assert all("access_token" not in e.body for e in sim.log)


async def test_form_encoded_body_token_in_query_and_no_version(
    graph: Client, sim: Simulator
) -> None:
    to = await _open(sim, FB)
    form = {
        "recipient": json.dumps(to),
        "message": json.dumps(text("hi")),
        "messaging_type": "RESPONSE",
    }
    resp = await graph.post(f"/{FB}/messages?access_token={TOKENS[FB]}", data=form)
    assert resp.status == 200
    entry = sim.accepted()[-1]
    assert entry.basis is Basis.STANDARD_WINDOW and entry.body["message"] == {"text": "hi"}
    resp = await graph.post(f"/v19.0/me/messages?access_token={TOKENS[FB]}", data=form)
    assert resp.status == 200


async def test_malformed_bodies_are_error_100(graph: Client, sim: Simulator) -> None:
    headers = {"Authorization": f"Bearer {TOKENS[IG]}", "Content-Type": "application/json"}
    resp = await graph.post(f"/v21.0/{IG}/messages", data=b"{not json", headers=headers)
    assert resp.status == 400 and error_of(await resp.json())[0] == 100
    to = await _open(sim, IG)
    status, data = await send(graph, IG, to, text("x"), messaging_type="MESSAGE_TAG")
    assert error_of(data)[0] == 100
    status, data = await send(graph, IG, {"id": to["id"], "comment_id": "1"}, text("x"))
    assert error_of(data)[0] == 100


async def test_log_records_basis_or_error_with_time_account_recipient_and_body(
    graph: Client, sim: Simulator, clock: VirtualClock
) -> None:
    to = await _open(sim, IG)
    await send(graph, IG, to, text("hello"))
    clock.advance(timedelta(days=2))
    await send(graph, IG, to, text("late"))
    ok, no = sim.log[0], sim.log[1]
    assert ok.accepted and ok.basis is Basis.STANDARD_WINDOW and ok.message_id
    assert (ok.account_id, ok.user_id, ok.recipient) == (IG, to["id"], to)
    assert ok.body["message"] == {"text": "hello"} and ok.time == clock.now() - timedelta(days=2)
    assert not no.accepted and (no.code, no.subcode, no.reason) == (
        10,
        2018278,
        Reason.WINDOW_CLOSED,
    )
    assert "outside of allowed window" in no.detail and no.time == clock.now()
    assert sim.accepted(IG, "alice") == [ok] and sim.refused(user="alice") == [no]
    assert sim.refused(reason=Reason.DM_CAP) == []
