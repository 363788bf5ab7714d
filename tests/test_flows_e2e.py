"""The shipped example flows end to end: signed webhooks from the simulator's player into the
running bot, sends observed (and judged) at the simulator, time moved by a virtual clock."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IG_ACCOUNT, Stack, make_stack

ROOT = Path(__file__).resolve().parent.parent
M = timedelta(minutes=1)
H = timedelta(hours=1)
D = timedelta(days=1)


@pytest.fixture
async def bot(aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path, clock: Any) -> Any:
    s = await make_stack(
        aiohttp_client,
        aiohttp_server,
        tmp_path,
        clock,
        flows_dir=str(ROOT / "flows"),
        templates_dir=str(ROOT / "templates"),
    )
    yield s
    await s.sim.close()


def dms(stack: Stack, user: str) -> list[Any]:
    """What Meta accepted into the user's DMs (public comment replies left out)."""
    return [e for e in stack.sim.accepted(user=stack.user(user)) if e.endpoint == "messages"]


async def test_a_pricing_comment_gets_one_private_reply_and_a_public_reply(bot: Stack) -> None:
    c = await bot.sim.player.comment(IG_ACCOUNT, "alice", "reel1", "PRICING!!")
    await bot.run_until(bot.clock.now() + M)
    accepted = bot.sim.accepted()
    kinds = [(e.endpoint, e.basis) for e in accepted]
    assert ("messages", "private_reply") in kinds
    assert [e.recipient for e in accepted if e.basis == "private_reply"] == [
        {"comment_id": c.comment_id}
    ]
    assert any(e.endpoint != "messages" for e in accepted)  # the public reply, after 20 s
    assert bot.sim.refused() == []


async def test_the_same_comment_redelivered_and_repeat_comments_never_give_a_second_dm(
    bot: Stack,
) -> None:
    first = await bot.sim.player.comment(IG_ACCOUNT, "alice", "reel1", "pricing")
    await bot.process()
    await bot.sim.player.redeliver(first)
    for _ in range(5):  # one user commenting PRICING again and again: the cooldown holds
        bot.clock.advance(M)
        await bot.sim.player.comment(IG_ACCOUNT, "alice", "reel1", "PRICING")
    await bot.run_until(bot.clock.now() + H)
    private = [e for e in bot.sim.accepted() if e.basis == "private_reply"]
    assert len(private) == 1
    assert bot.sim.refused() == []


async def test_accented_and_shouted_keywords_match_and_others_do_not(bot: Stack) -> None:
    await bot.sim.player.comment(IG_ACCOUNT, "bob", "reel1", "pricíng?")
    await bot.sim.player.comment(IG_ACCOUNT, "carol", "reel1", "love this reel")
    await bot.run_until(bot.clock.now() + M)
    users = {e.user_id for e in bot.sim.accepted() if e.basis == "private_reply"}
    assert users == {bot.user("bob")}


async def test_the_seed_example_answer_optin_and_nudge_on_the_token(bot: Stack) -> None:
    # 11:00 PRICING on a reel; the private reply; 11:15 the user answers in the DM thread.
    await bot.sim.player.comment(IG_ACCOUNT, "alice", "reel1", "PRICING")
    await bot.run_until(bot.clock.now() + 15 * M)
    await bot.sim.player.dm(IG_ACCOUNT, "alice", "is there a yearly plan?")
    await bot.run_until(bot.clock.now() + M)
    bases = [e.basis for e in dms(bot, "alice")]
    assert bases[0] == "private_reply"
    assert bases[1:] == ["standard_window", "standard_window"]  # the answer, the opt-in ask
    optin_request = dms(bot, "alice")[-1].body["message"]
    assert optin_request["attachment"]["payload"]["template_type"] == "notification_messages"
    await bot.sim.player.optin(
        IG_ACCOUNT, "alice", "notification_messages", "pricing_updates", "WEEKLY"
    )
    await bot.run_until(bot.clock.now() + 4 * D, step=6 * H)
    last = dms(bot, "alice")[-1]
    assert last.basis == "marketing"  # three days on, the window long closed
    assert last.recipient.get("notification_messages_token")
    assert bot.sim.refused() == []


async def test_without_the_optin_the_nudge_is_dropped_with_its_reason(bot: Stack) -> None:
    await bot.sim.player.comment(IG_ACCOUNT, "alice", "reel1", "PRICING")
    await bot.run_until(bot.clock.now() + 15 * M)
    await bot.sim.player.dm(IG_ACCOUNT, "alice", "is there a yearly plan?")
    await bot.run_until(bot.clock.now() + 4 * D, step=6 * H)
    assert len(dms(bot, "alice")) == 3  # no nudge
    assert bot.sim.refused() == []
    dropped = await bot.rows("SELECT outcome, reason FROM send_log WHERE outcome != 'sent'")
    assert dropped and dropped[-1][0] == "dropped"


async def test_a_dm_keyword_shows_the_menu_and_branches_on_the_tap(bot: Stack) -> None:
    await bot.sim.player.dm(IG_ACCOUNT, "dana", "menu please")
    await bot.run_until(bot.clock.now() + M)
    menu = dms(bot, "dana")[-1].body["message"]
    assert [q["payload"] for q in menu["quick_replies"]][0] == "MENU_PRICING"
    await bot.sim.player.quick_reply(IG_ACCOUNT, "dana", "MENU_HOURS", "Opening hours")
    await bot.run_until(bot.clock.now() + M)
    assert len(dms(bot, "dana")) == 2
    assert bot.sim.refused() == []


async def test_notes_explain_what_each_flow_decided(bot: Stack) -> None:
    await bot.sim.player.comment(IG_ACCOUNT, "alice", "reel1", "PRICING")
    await bot.run_until(bot.clock.now() + M)
    notes = [n for (n,) in await bot.rows("SELECT note FROM flow_notes ORDER BY id")]
    assert any("queued private_reply" in n for n in notes)
