"""Operator actions: a human takes a conversation and hands it back; a paused account resumes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from bot.admin import release_handoff, resume_account
from tests.conftest import IG_ACCOUNT, Stack, make_stack

ROOT = Path(__file__).resolve().parent.parent
M = timedelta(minutes=1)


def dm_count(stack: Stack, user: str) -> int:
    return sum(1 for e in stack.sim.accepted(user=stack.user(user)) if e.endpoint == "messages")


async def test_handoff_stops_automation_until_a_human_hands_back(bot: Stack) -> None:
    await bot.sim.player.dm(IG_ACCOUNT, "erin", "can I talk to a human please")
    await bot.run_until(bot.clock.now() + M)
    assert dm_count(bot, "erin") == 1  # "connecting you"; then automation stops
    tags = await bot.rows("SELECT tags FROM contacts WHERE user_id = ?", bot.user("erin"))
    assert "needs_human" in tags[0][0]
    await bot.sim.player.dm(IG_ACCOUNT, "erin", "menu")  # would start the menu flow
    await bot.run_until(bot.clock.now() + M)
    assert dm_count(bot, "erin") == 1
    db = bot.rt.db
    assert db is not None
    assert await release_handoff(bot.rt.config, db, bot.clock, IG_ACCOUNT, bot.user("erin"))
    bot.clock.advance(15 * M)  # past the menu flow's cooldown
    await bot.sim.player.dm(IG_ACCOUNT, "erin", "menu")
    await bot.run_until(bot.clock.now() + M)
    assert dm_count(bot, "erin") == 2
    assert bot.sim.refused() == []


async def test_a_paused_account_sends_again_after_resume(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path, clock: Any
) -> None:
    stack = await make_stack(
        aiohttp_client, aiohttp_server, tmp_path, clock, sim_tokens={IG_ACCOUNT: "rotated"}
    )
    try:
        await stack.sim.player.dm(IG_ACCOUNT, "alice", "hi")
        await stack.process()
        db = stack.rt.db
        assert db is not None
        from tests.test_sender import queue

        await queue(stack, stack.user("alice"), "answer")
        await stack.run_until(stack.clock.now() + M)
        assert stack.sim.accepted() == []
        import dataclasses

        fixed = dataclasses.replace(stack.sim.account(IG_ACCOUNT), token="ig-token-abc")
        stack.sim.model.accounts[IG_ACCOUNT] = fixed  # the operator fixed the token
        was = await resume_account(stack.rt.config, db, IG_ACCOUNT)
        assert was is not None and was.startswith("token_invalid")
        await stack.run_until(stack.clock.now() + M)
        assert [e.body["message"]["text"] for e in stack.sim.accepted()] == ["answer"]
    finally:
        await stack.sim.close()
