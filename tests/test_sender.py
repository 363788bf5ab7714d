"""The send pipeline against the simulator: policy re-checked at the moment of sending, caps
that hold over a simulated day, Meta's errors handled per POLICY.md §5. No real waiting."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bot.events import OptInKind
from bot.policy import Content, Intent
from bot.store.outbox import SendKind, enqueue
from tests.conftest import FB_PAGE, IG_ACCOUNT, Stack, make_stack

H = timedelta(hours=1)


async def queue(
    stack: Stack,
    user: str | None,
    text: str,
    *,
    account: str = IG_ACCOUNT,
    after: timedelta = timedelta(0),
    intent: Intent | None = None,
    kind: SendKind = SendKind.MESSAGE,
    deadline: Any = None,
    once_key: str | None = None,
    message: dict[str, Any] | None = None,
) -> int | None:
    db = stack.rt.db
    assert db is not None
    now = stack.clock.now()
    async with db.transaction() as conn:
        return await enqueue(
            conn,
            account_id=account,
            user_id=user,
            kind=kind,
            intent=intent or Intent(),
            message=message or {"text": text},
            due_at=now + after,
            deadline=deadline,
            now=now,
            once_key=once_key,
        )


async def log_of(stack: Stack) -> list[tuple[Any, ...]]:
    return await stack.rows("SELECT outcome, kind, basis, reason FROM send_log ORDER BY id")


async def test_follow_up_inside_the_window_fires_on_the_standard_window(stack: Stack) -> None:
    await stack.sim.player.dm(IG_ACCOUNT, "alice", "hi")
    await stack.process()
    await queue(stack, stack.user("alice"), "still there?", after=2 * H)
    await stack.run_until(stack.clock.now() + 3 * H)
    accepted = stack.sim.accepted()
    assert [e.body["message"]["text"] for e in accepted] == ["still there?"]
    assert accepted[0].time == stack.clock.now() - H  # sent when due, not when looked at
    assert await log_of(stack) == [("sent", "message", "standard_window", None)]


async def test_follow_up_whose_window_closed_is_dropped_with_its_reason(stack: Stack) -> None:
    await stack.sim.player.dm(IG_ACCOUNT, "alice", "hi")
    await stack.process()
    await queue(stack, stack.user("alice"), "nudge", after=36 * H)
    await stack.run_until(stack.clock.now() + 40 * H)
    assert stack.sim.log.entries == []  # nothing reached Meta
    [(outcome, kind, basis, reason)] = await log_of(stack)
    assert (outcome, basis) == ("dropped", None)
    assert reason in {"window_closed", "no_open_basis"}


async def test_a_user_reply_before_the_follow_up_resets_the_window(stack: Stack) -> None:
    await stack.sim.player.dm(IG_ACCOUNT, "alice", "hi")
    await stack.process()
    await queue(stack, stack.user("alice"), "nudge", after=30 * H)
    await stack.run_until(stack.clock.now() + 20 * H)
    await stack.sim.player.dm(IG_ACCOUNT, "alice", "one more question")
    await stack.run_until(stack.clock.now() + 11 * H)
    assert [e.body["message"]["text"] for e in stack.sim.accepted()] == ["nudge"]
    assert stack.sim.refused() == []


async def test_nothing_but_private_replies_after_a_private_reply_until_the_user_writes(
    stack: Stack,
) -> None:
    c = await stack.sim.player.comment(IG_ACCOUNT, "alice", "reel1", "PRICING")
    await stack.process()
    alice = stack.user("alice")
    await queue(
        stack,
        alice,
        "here is the price",
        kind=SendKind.PRIVATE_REPLY,
        intent=Intent(comment_id=c.comment_id),
        once_key=f"pr:{c.comment_id}",
    )
    await stack.process()
    await queue(stack, alice, "and another thing")
    await stack.process()
    assert [e.basis for e in stack.sim.accepted()] == ["private_reply"]
    assert (await log_of(stack))[-1][:2] == ("dropped", "message")
    stack.clock.advance(timedelta(minutes=15))
    await stack.sim.player.dm(IG_ACCOUNT, "alice", "tell me more")
    await queue(stack, alice, "sure!")
    await stack.process()
    assert [e.body["message"]["text"] for e in stack.sim.accepted()][-1] == "sure!"


async def test_a_private_reply_is_queued_once_per_comment(stack: Stack) -> None:
    c = await stack.sim.player.comment(IG_ACCOUNT, "alice", "reel1", "PRICING")
    await stack.process()
    intent = Intent(comment_id=c.comment_id)
    first = await queue(
        stack,
        stack.user("alice"),
        "hi",
        kind=SendKind.PRIVATE_REPLY,
        intent=intent,
        once_key=f"pr:{c.comment_id}",
    )
    second = await queue(
        stack,
        stack.user("alice"),
        "hi",
        kind=SendKind.PRIVATE_REPLY,
        intent=intent,
        once_key=f"pr:{c.comment_id}",
    )
    assert first is not None and second is None
    await stack.process()
    assert len(stack.sim.accepted()) == 1


async def test_one_time_token_is_used_once(stack: Stack) -> None:
    await stack.sim.player.dm(FB_PAGE, "carol", "notify me when it's back")
    await stack.sim.player.optin(FB_PAGE, "carol", "one_time_notif_req", "restock")
    await stack.run_until(stack.clock.now() + 3 * 24 * H)  # the standard window has closed
    carol = stack.user("carol")
    intent = Intent(via_token=OptInKind.ONE_TIME, topic="restock", content=Content.NON_PROMOTIONAL)
    await queue(stack, carol, "It's back in stock!", account=FB_PAGE, intent=intent)
    await queue(stack, carol, "Still in stock!", account=FB_PAGE, intent=intent)
    await stack.process()
    assert [e.basis for e in stack.sim.accepted()] == ["one_time_notification"]
    outcomes = [(o, r) for o, _, _, r in await log_of(stack)]
    assert outcomes == [("sent", None), ("dropped", "token_used")]


async def test_marketing_frequency_is_enforced_and_stop_stops(stack: Stack) -> None:
    await stack.sim.player.dm(IG_ACCOUNT, "alice", "deals please")
    await stack.sim.player.optin(IG_ACCOUNT, "alice", "notification_messages", "flash", "WEEKLY")
    await stack.run_until(stack.clock.now() + 2 * 24 * H)
    alice = stack.user("alice")
    intent = Intent(via_token=OptInKind.MARKETING, topic="flash")
    await queue(stack, alice, "Flash sale today", intent=intent)
    await stack.process()
    await queue(stack, alice, "Another sale", intent=intent)  # same week: frequency
    await stack.process()
    await stack.run_until(stack.clock.now() + 8 * 24 * H)
    await stack.sim.player.stop(IG_ACCOUNT, "alice", "flash")
    await stack.run_until(stack.clock.now() + H)
    await queue(stack, alice, "After STOP", intent=intent)
    await stack.process()
    assert [e.body["message"]["text"] for e in stack.sim.accepted()] == ["Flash sale today"]
    reasons = [r for o, _, _, r in await log_of(stack) if o == "dropped"]
    assert reasons == ["frequency_limit", "opted_out"]
    assert stack.sim.refused() == []


async def test_the_hourly_cap_holds_over_a_simulated_day(stack: Stack) -> None:
    users = [f"fan{i}" for i in range(450)]
    for name in users:
        await stack.sim.player.dm(IG_ACCOUNT, name, "hi")
    await stack.process()
    for name in users:
        await queue(stack, stack.user(name), f"hello {name}")
    await stack.run_until(stack.clock.now() + 24 * H)
    sent = sorted(e.time for e in stack.sim.accepted())
    assert len(sent) == 450 and stack.sim.refused() == []
    for i, t in enumerate(sent):
        in_hour = sum(1 for u in sent[i:] if u < t + H)
        assert in_hour <= 200, f"{in_hour} sends in the hour from {t}"
    assert sent[-1] - sent[0] < 3 * H  # the queue drains as fast as the cap allows


async def test_a_throttled_account_backs_off_and_recovers(stack: Stack) -> None:
    await stack.sim.player.dm(IG_ACCOUNT, "alice", "hi")
    await stack.process()
    stack.sim.faults.throttle_for(stack.clock.now(), timedelta(minutes=5))
    await queue(stack, stack.user("alice"), "answer")
    await stack.process()
    assert stack.sim.accepted() == []
    assert (await log_of(stack))[-1][0] == "retrying"
    await stack.run_until(stack.clock.now() + timedelta(minutes=20))
    assert [e.body["message"]["text"] for e in stack.sim.accepted()] == ["answer"]
    assert stack.sim.accepted()[0].time >= stack.clock.now() - timedelta(minutes=15)


async def test_transient_errors_are_retried_within_the_deadline(stack: Stack) -> None:
    await stack.sim.player.dm(IG_ACCOUNT, "alice", "hi")
    await stack.process()
    stack.sim.faults.next("5xx", 2)
    await queue(stack, stack.user("alice"), "answer")
    await stack.run_until(stack.clock.now() + timedelta(minutes=5))
    assert [e.body["message"]["text"] for e in stack.sim.accepted()] == ["answer"]
    assert [o for o, *_ in await log_of(stack)] == ["retrying", "retrying", "sent"]


async def test_a_send_whose_outcome_is_unknown_is_never_resent(stack: Stack) -> None:
    await stack.sim.player.dm(IG_ACCOUNT, "alice", "hi")
    await stack.process()
    stack.sim.echoes = False  # no echo comes to settle it
    stack.sim.faults.next("accept_then_drop")
    await queue(stack, stack.user("alice"), "once only")
    await stack.run_until(stack.clock.now() + H)
    assert len(stack.sim.accepted()) == 1  # Meta has it once...
    assert [o for o, *_ in await log_of(stack)] == ["unknown"]  # ...and the bot never resent


async def test_an_unavailable_user_is_marked_unreachable_and_never_retried(stack: Stack) -> None:
    await stack.sim.player.dm(IG_ACCOUNT, "bob", "hi")
    await stack.process()
    stack.sim.make_unavailable("bob")
    await queue(stack, stack.user("bob"), "one")
    await stack.process()
    await queue(stack, stack.user("bob"), "two")
    await stack.process()
    assert [(o, r) for o, _, _, r in await log_of(stack)] == [
        ("failed", "unreachable"),
        ("dropped", "contact_unreachable"),
    ]
    assert len(stack.sim.refused()) == 1


async def test_a_token_error_pauses_the_account_and_holds_its_queue(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Any, clock: Any
) -> None:
    stack = await make_stack(
        aiohttp_client, aiohttp_server, tmp_path, clock, sim_tokens={IG_ACCOUNT: "rotated"}
    )
    try:
        await stack.sim.player.dm(IG_ACCOUNT, "alice", "hi")
        await stack.process()
        await queue(stack, stack.user("alice"), "answer")
        await queue(stack, stack.user("alice"), "second")
        await stack.run_until(stack.clock.now() + H)
        assert stack.sim.accepted() == []
        assert len(stack.sim.refused()) == 1  # paused after the first 190, not hammering
        paused = await stack.rows("SELECT paused_reason FROM account_state")
        assert paused and paused[0][0].startswith("token_invalid")
        assert await stack.rows("SELECT count(*) FROM outbox WHERE state = 'pending'") == [(2,)]
    finally:
        await stack.sim.close()


async def test_a_queued_message_whose_basis_expires_while_waiting_is_dropped_as_expired(
    stack: Stack,
) -> None:
    await stack.sim.player.dm(IG_ACCOUNT, "alice", "hi")
    await stack.process()
    state_deadline = stack.clock.now() + 24 * H
    # Held back (due later than its deadline, as a long queue would).
    await queue(stack, stack.user("alice"), "late", after=25 * H, deadline=state_deadline)
    await stack.run_until(stack.clock.now() + 26 * H)
    [(outcome, _, _, reason)] = await log_of(stack)
    assert (outcome, reason) == ("expired", "expired_in_queue")
    assert stack.sim.log.entries == []


async def test_sends_in_flight_at_a_crash_are_settled_as_unknown_not_resent(stack: Stack) -> None:
    await stack.sim.player.dm(IG_ACCOUNT, "alice", "hi")
    await stack.process()
    item = await queue(stack, stack.user("alice"), "in flight")
    db = stack.rt.db
    assert db is not None and stack.rt.sender is not None
    other = await queue(stack, stack.user("alice"), "leased, not yet tried")
    async with db.transaction() as conn:  # as a kill -9 mid-send would leave them
        await conn.execute("UPDATE outbox SET state = 'sending' WHERE id = ?", (item,))
        await conn.execute(
            "UPDATE outbox SET lease_owner = 'x', lease_until = 9e15 WHERE id = ?", (other,)
        )
    assert await stack.rt.sender.recover() == 1
    await stack.run_until(stack.clock.now() + H)
    # Only the one in flight is unknown; the leased one goes out as normal.
    assert [e.body["message"]["text"] for e in stack.sim.accepted()] == ["leased, not yet tried"]
    assert [(o, r) for o, _, _, r in await log_of(stack)] == [
        ("unknown", "in_flight_at_restart"),
        ("sent", None),
    ]


async def test_an_unknown_outcome_is_settled_as_sent_when_metas_echo_arrives(
    stack: Stack,
) -> None:
    # Messenger hands the send's `metadata` (its outbox id) back on the echo.
    await stack.sim.player.dm(FB_PAGE, "alice", "hi")
    await stack.process()
    stack.sim.faults.next("accept_then_drop")
    await queue(stack, stack.user("alice"), "did this go?", account=FB_PAGE)
    await stack.run_until(stack.clock.now() + timedelta(minutes=1))  # the echo comes back
    outcomes = [(o, r) for o, _, _, r in await log_of(stack)]
    assert outcomes == [("sent", "reconciled_by_echo")]  # one send, one log row
    assert await stack.rows("SELECT state FROM outbox") == [("sent",)]
    assert len(stack.sim.accepted()) == 1


async def test_without_metadata_an_unknown_outcome_stays_unknown_whatever_the_echo_says(
    stack: Stack,
) -> None:
    # Instagram: no metadata comes back, and the text proves nothing.
    await stack.sim.player.dm(IG_ACCOUNT, "alice", "hi")
    await stack.process()
    stack.sim.faults.next("accept_then_drop")
    await queue(stack, stack.user("alice"), "did this go?")
    await stack.run_until(stack.clock.now() + timedelta(minutes=1))
    assert [(o, r) for o, _, _, r in await log_of(stack)] == [("unknown", "unknown_outcome")]
    assert len(stack.sim.accepted()) == 1  # it went once, and is never sent again


async def test_a_person_typing_the_same_text_never_settles_the_bot_s_pending_send(
    stack: Stack,
) -> None:
    # The bot's "Thanks!" waits to be retried after a 5xx; someone on the team types
    # "Thanks!" in the Meta inbox. Matched by text, the echo marked the bot's send as sent
    # and the user never got it. By ids, the retry goes.
    await stack.sim.player.dm(FB_PAGE, "dana", "got it")
    await stack.process()
    dana = stack.user("dana")
    stack.sim.faults.next("5xx")
    await queue(stack, dana, "Thanks!", account=FB_PAGE)
    await stack.process()
    assert await stack.rows("SELECT state, attempts FROM outbox") == [("pending", 1)]
    await stack.sim.player.echo(FB_PAGE, dana, "m.by-a-person", {"text": "Thanks!"})
    await stack.process()
    assert await stack.rows("SELECT state FROM outbox") == [("pending",)]
    await stack.run_until(stack.clock.now() + timedelta(minutes=5))
    assert [e.body["message"]["text"] for e in stack.sim.accepted(user=dana)] == ["Thanks!"]
    assert await stack.rows("SELECT state FROM outbox") == [("sent",)]


async def test_a_private_reply_in_flight_at_a_crash_still_blocks_other_sends(stack: Stack) -> None:
    await stack.sim.player.dm(IG_ACCOUNT, "alice", "hi")  # a window long closed...
    stack.clock.advance(timedelta(hours=25))
    c = await stack.sim.player.comment(IG_ACCOUNT, "alice", "reel1", "PRICING")
    await stack.process()
    item = await queue(
        stack,
        stack.user("alice"),
        "price",
        kind=SendKind.PRIVATE_REPLY,
        intent=Intent(comment_id=c.comment_id),
        once_key=f"pr:{c.comment_id}",
    )
    db = stack.rt.db
    assert db is not None and stack.rt.sender is not None
    async with db.transaction() as conn:  # ...and the private reply may have reached Meta
        await conn.execute("UPDATE outbox SET state = 'sending' WHERE id = ?", (item,))
    await stack.rt.sender.recover()
    await queue(stack, stack.user("alice"), "and another thing")
    await stack.process()
    assert stack.sim.log.entries == []
    assert (await log_of(stack))[-1][3] == "awaiting_user_reply"


async def test_a_public_reply_does_not_wait_behind_a_dm_backlog_at_the_hourly_cap(
    bot: Stack,
) -> None:
    # 250 people write "menu": 200 menus go within the hour's cap, 50 wait with a deadline.
    for i in range(250):
        await bot.sim.player.dm(IG_ACCOUNT, f"fan{i}", "menu")
    await bot.run_until(bot.clock.now() + 2 * timedelta(minutes=1))
    assert len(bot.sim.accepted()) == 200
    states = await bot.rows("SELECT state, count(*) FROM outbox GROUP BY state")
    log = await bot.rows("SELECT outcome, reason, detail FROM send_log WHERE outcome != 'sent'")
    assert await bot.rows("SELECT count(*) FROM outbox WHERE state = 'pending'") == [(50,)], (
        states,
        log,
    )
    # Then a PRICING comment: its private reply at once, its public reply due 20 s later.
    c = await bot.sim.player.comment(IG_ACCOUNT, "alice", "reel1", "PRICING")
    commented = bot.clock.now()
    await bot.run_until(commented + timedelta(minutes=5))
    [public] = [e for e in bot.sim.accepted() if e.endpoint == "replies"]
    assert public.time - commented <= timedelta(seconds=21)  # due after 20 s: on time
    assert await bot.rows("SELECT comment_id FROM outbox WHERE kind = 'public_reply'") == [
        (c.comment_id,)
    ]
    dms = [e for e in bot.sim.accepted() if e.basis == "standard_window"]
    assert len(dms) == 200  # the public reply took no DM slot, and the cap still holds
    assert bot.sim.refused() == []
