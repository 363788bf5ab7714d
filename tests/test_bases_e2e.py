"""Bases end to end: what the bot sends at a window's edge, after Meta's own "outside the
window", and to a user who wrote before the private reply went out. Signed webhooks into the
running app, sends judged by the simulator, time on the virtual clock (issue 13, items 2, 3, 5).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from bot.clock import to_ms
from bot.policy import Intent
from bot.store.outbox import SendKind, enqueue
from tests.conftest import IG_ACCOUNT, Stack, ig_dm, post_signed

S = timedelta(seconds=1)
M = timedelta(minutes=1)
H = timedelta(hours=1)


async def queue(stack: Stack, user: str, text: str, *, after: timedelta = timedelta(0)) -> None:
    db = stack.rt.db
    assert db is not None
    now = stack.clock.now()
    async with db.transaction() as conn:
        await enqueue(
            conn,
            account_id=IG_ACCOUNT,
            user_id=user,
            kind=SendKind.MESSAGE,
            intent=Intent(),
            message={"text": text},
            due_at=now + after,
            deadline=None,
            now=now,
        )


async def tick_while_the_clock_runs(stack: Stack) -> None:
    """One dispatcher tick; whenever the simulator sleeps on the virtual clock (its latency
    fault), the clock moves to its wake, as real time would pass during the Graph call."""
    assert stack.rt.dispatcher is not None
    task: asyncio.Task[Any] = asyncio.create_task(stack.rt.dispatcher.tick())
    while not task.done():
        wake = stack.clock.next_wake()
        if wake is not None:
            stack.clock.set(wake)
        await asyncio.sleep(0.001)
    await task
    await stack.sim.drain()


async def send_log(stack: Stack) -> list[tuple[Any, ...]]:
    return await stack.rows("SELECT outcome, reason, error_code FROM send_log ORDER BY id")


async def test_a_send_decided_a_second_before_the_window_closes_is_not_made(
    stack: Stack,
) -> None:
    # The Graph call takes 2 s: a send that leaves 1 s before the 24 h close reaches Meta
    # after it, and Meta refuses it (10/2018278). The bot keeps a margin, so it never tries.
    await stack.sim.player.dm(IG_ACCOUNT, "alice", "hi")
    await stack.process()
    alice = stack.user("alice")
    await queue(stack, alice, "last call", after=24 * H - S)
    stack.clock.advance(24 * H - S)
    stack.sim.faults.latency = 2.0
    assert stack.rt.worker is not None
    await stack.rt.worker.drain()
    await tick_while_the_clock_runs(stack)
    assert stack.sim.refused() == []
    assert stack.sim.accepted(user=alice) == []
    [(outcome, reason, code)] = await send_log(stack)
    assert (outcome, reason, code) == ("dropped", "window_closed", None)


async def test_meta_s_outside_the_window_stops_the_other_sends_queued_on_it(stack: Stack) -> None:
    # The bot believes the window is open (a DM Meta's side never counted); Meta refuses the
    # first send as outside the window. The two queued behind it are dropped with Meta's
    # reason, not tried and refused one by one (each refusal is a mark against the account).
    await stack.sim.player.dm(IG_ACCOUNT, "bob", "hi")
    await stack.process()
    bob = stack.user("bob")
    stack.clock.advance(20 * H)
    late = to_ms(stack.clock.now())
    assert await post_signed(stack.client, ig_dm("m.unseen", "still here", user=bob, ts_ms=late))
    await stack.process()
    stack.clock.advance(10 * H)  # Meta's window closed at 24 h; the bot's runs to 44 h
    for text in ("one", "two", "three"):
        await queue(stack, bob, text)
    await stack.process()
    refused = stack.sim.refused(user=bob)
    assert [(e.code, e.subcode) for e in refused] == [(10, 2018278)]
    log = await send_log(stack)
    assert log[0] == ("failed", "window_closed", 10)
    assert [(o, r) for o, r, _ in log[1:]] == [("dropped", "closed_by_meta")] * 2
    # The person writes again: the window Meta closed is open again.
    stack.clock.advance(M)
    await stack.sim.player.dm(IG_ACCOUNT, "bob", "hello?")
    await stack.process()
    await queue(stack, bob, "welcome back")
    await stack.process()
    assert [e.body["message"]["text"] for e in stack.sim.accepted(user=bob)] == ["welcome back"]


async def test_a_user_who_writes_before_the_private_reply_goes_out_is_answered(
    bot: Stack,
) -> None:
    # A slow Graph API: alice's "yes" arrives while her private reply is still queued. Her own
    # DM opened the 24 h window (POLICY.md §1): the answer goes after the private reply.
    await bot.sim.player.comment(IG_ACCOUNT, "alice", "reel1", "PRICING")
    assert bot.rt.worker is not None
    await bot.rt.worker.drain()  # the private reply is queued, not sent
    bot.clock.advance(S)
    await bot.sim.player.dm(IG_ACCOUNT, "alice", "yes, is there a yearly plan?")
    await bot.run_until(bot.clock.now() + M)
    dms = [e for e in bot.sim.accepted(user=bot.user("alice")) if e.endpoint == "messages"]
    assert [e.basis for e in dms][:2] == ["private_reply", "standard_window"]
    assert bot.sim.refused() == []
    reasons = [r for _, r, _ in await send_log(bot)]
    assert "awaiting_user_reply" not in reasons
