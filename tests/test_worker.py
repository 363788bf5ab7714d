"""The inbox worker under pressure: one bad item costs only itself, a STOP in the backlog stops
marketing sends, storage errors are retried, and the whole app runs its own workers on a
virtual clock (issue 13, items 1, 13, 14, 20)."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import aiosqlite
import pytest

from bot.clock import to_ms
from bot.engine import Engine
from bot.events import Event, OptInKind
from bot.inbox_command import inbox_command
from bot.policy import Intent
from bot.store.outbox import SendKind, enqueue
from tests.conftest import IG_ACCOUNT, ROOT, Stack, ig_dm, make_stack, post_signed, runtime

M = timedelta(minutes=1)
H = timedelta(hours=1)
D = timedelta(days=1)


def private_replies(stack: Stack) -> list[Any]:
    return [e for e in stack.sim.accepted() if e.basis == "private_reply"]


async def test_one_bad_item_in_a_batch_of_a_thousand_costs_only_itself(bot: Stack) -> None:
    # A 1000-change delivery with 50 keyword comments, a lone surrogate in one comment, a
    # timestamp in year 9999 on another, and the account's own message without is_echo:
    # before, any one of them set the whole delivery aside and none of the 50 was answered.
    url, bot.sim.webhook_url = bot.sim.webhook_url, None  # record the comments, deliver later
    changes: list[Any] = []
    for i in range(1000):
        text = "PRICING please" if i % 20 == 0 else f"nice reel {i}"
        if i == 7:
            text = "PRICING \ud800 odd"
        d = await bot.sim.player.comment(IG_ACCOUNT, f"fan{i}", "reel1", text)
        changes.extend(d.payload["entry"][0]["changes"])
    bot.sim.webhook_url = url
    now_s = int(bot.clock.now().timestamp())
    entries: list[Any] = [{"id": IG_ACCOUNT, "time": now_s, "changes": changes}]
    far = ig_dm("m.far", "PRICING", user=bot.user("late"), ts_ms=253_402_300_799_000)
    own = ig_dm("m.own", "hello from us", user=bot.user("fan1"))
    own["entry"][0]["messaging"][0]["sender"] = {"id": IG_ACCOUNT}
    own["entry"][0]["messaging"][0]["recipient"] = {"id": bot.user("fan1")}
    entries += far["entry"] + own["entry"]
    body = json.dumps({"object": "instagram", "entry": entries}).encode()
    assert b"\\ud800" in body
    assert await post_signed(bot.client, body) == 200
    await bot.run_until(bot.clock.now() + 5 * M)
    answered = {e.recipient["comment_id"] for e in private_replies(bot)}
    keyword = {c["value"]["id"] for i, c in enumerate(changes) if i % 20 == 0 or i == 7}
    assert answered == keyword and len(answered) == 51
    assert bot.sim.refused() == []
    assert await bot.rows("SELECT count(*) FROM event_queue") == [(0,)]
    assert await bot.rows("SELECT count(*) FROM inbox WHERE state != 'done'") == [(0,)]


async def test_an_event_the_engine_cannot_apply_is_set_aside_alone_and_replayed(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Engine.handle

    async def failing(self: Engine, conn: aiosqlite.Connection, events: Sequence[Event]) -> None:
        if any(ev.key == "mid:m.bad" for ev in events):
            raise ValueError("a bug on this one event")
        await original(self, conn, events)

    monkeypatch.setattr(Engine, "handle", failing)
    entries: list[Any] = []
    for mid, user in (("m.1", "u1"), ("m.bad", "u2"), ("m.3", "u3")):
        entries += ig_dm(mid, "hi", user=stack.user(user))["entry"]
    assert await post_signed(stack.client, {"object": "instagram", "entry": entries}) == 200
    await stack.process()
    contacts = await stack.rows("SELECT user_id FROM conversations ORDER BY user_id")
    assert sorted(u for (u,) in contacts) == sorted([stack.user("u1"), stack.user("u3")])
    out = io.StringIO()
    args = _Args()
    assert await inbox_command(args, stack.rt.config, out) == 0
    listed = out.getvalue()
    assert "ValueError: a bug on this one event" in listed and "1 events" in listed
    monkeypatch.setattr(Engine, "handle", original)  # the bug is fixed
    args.inbox_command, args.all = "replay", True
    assert await inbox_command(args, stack.rt.config, io.StringIO()) == 0
    await stack.process()
    assert (stack.user("u2"),) in await stack.rows("SELECT user_id FROM conversations")
    assert await stack.rows("SELECT count(*) FROM event_queue") == [(0,)]


class _Args:
    json = False
    inbox_command: str | None = None
    all = False
    event: list[int] = []
    delivery: list[int] = []


async def test_a_stop_waiting_behind_a_backlog_stops_marketing_sends_at_once(bot: Stack) -> None:
    # alice opted in to weekly pricing news; days later a marketing send is due. Her STOP
    # was acknowledged, but sits behind a flood of comments the worker has not reached:
    # the send must not go (Meta refuses marketing after STOP_NOTIFICATIONS).
    await bot.sim.player.comment(IG_ACCOUNT, "alice", "reel1", "PRICING")
    await bot.run_until(bot.clock.now() + M)
    await bot.sim.player.dm(IG_ACCOUNT, "alice", "is there a yearly plan?")
    await bot.run_until(bot.clock.now() + M)
    await bot.sim.player.optin(
        IG_ACCOUNT, "alice", "notification_messages", "pricing_updates", "WEEKLY"
    )
    await bot.process()
    bot.clock.advance(2 * D)
    alice = bot.user("alice")
    db = bot.rt.db
    assert db is not None
    async with db.transaction() as conn:
        await enqueue(
            conn,
            account_id=IG_ACCOUNT,
            user_id=alice,
            kind=SendKind.MESSAGE,
            intent=Intent(via_token=OptInKind.MARKETING, topic="pricing_updates"),
            message={"text": "This week: 20% off the yearly plan"},
            due_at=bot.clock.now(),
            deadline=None,
            now=bot.clock.now(),
        )
    for i in range(300):
        await bot.sim.player.comment(IG_ACCOUNT, f"crowd{i}", "reel2", "so good")
    await bot.sim.player.stop(IG_ACCOUNT, "alice", "pricing_updates")
    bot.clock.advance(timedelta(seconds=1))
    assert bot.rt.dispatcher is not None
    await bot.rt.dispatcher.tick()  # the sender runs before the worker drained anything
    await bot.sim.drain()
    assert bot.sim.refused() == []
    marketing = [e for e in bot.sim.accepted(user=alice) if e.basis == "marketing"]
    assert marketing == []
    [(reason,)] = await bot.rows(
        "SELECT reason FROM send_log WHERE user_id = ? AND outcome = 'dropped'", alice
    )
    assert reason == "opted_out"


async def test_storage_errors_are_retried_and_the_worker_resumes_by_itself(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Any, clock: Any, monkeypatch: Any
) -> None:
    # A full disk: every write of the main file fails for a while. Before, the fallback that
    # marks a delivery bad failed on the same disk and killed the worker; acknowledged
    # comments were never answered, even after space came back.
    from bot.store import db as store_db

    failing = {"on": False, "refused": 0}
    original = store_db.Database.transaction

    def transaction(self: Any) -> Any:
        if failing["on"] and self.path.name == "bot.sqlite3":
            failing["refused"] += 1
            raise sqlite3.OperationalError("database or disk is full")
        return original(self)

    monkeypatch.setattr(store_db.Database, "transaction", transaction)
    stack = await make_stack(
        aiohttp_client,
        aiohttp_server,
        tmp_path,
        clock,
        start_workers=True,
        flows_dir=str(ROOT / "flows"),
        templates_dir=str(ROOT / "templates"),
    )
    try:
        worker = stack.rt.worker
        assert worker is not None
        worker._retry_first = 0.001  # real time between tries; a test needs no 0.1 s
        failing["on"] = True  # the disk fills up
        for i in range(3):
            await stack.sim.player.comment(IG_ACCOUNT, f"u{i}", "reel1", "PRICING")
        for _ in range(500):
            if failing["refused"] >= 3:
                break
            await asyncio.sleep(0.002)
        assert failing["refused"] >= 3
        failing["on"] = False  # space is back
        await _until(lambda: len(private_replies(stack)) == 3, stack)
        assert stack.rt.dead == []
        assert await stack.rows("SELECT count(*) FROM inbox WHERE state = 'bad'") == [(0,)]
    finally:
        await stack.sim.close()


async def _until(done: Any, stack: Stack, tries: int = 2000) -> None:
    """Let the app's own workers run (real time, a few ms at a time) until `done()`."""
    for _ in range(tries):
        if done():
            return
        wake = stack.clock.next_wake()
        if wake is not None and wake <= stack.clock.now() + M:
            stack.clock.set(wake)
        await asyncio.sleep(0.002)
        await stack.sim.drain()
    raise AssertionError("the app's workers did not get there")


async def test_the_whole_app_runs_its_own_workers_on_a_virtual_clock(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Any, clock: Any
) -> None:
    # The inbox worker divided by a batch's elapsed time, which a virtual clock leaves at
    # zero: ZeroDivisionError killed it, and nothing was ever answered.
    stack = await make_stack(
        aiohttp_client,
        aiohttp_server,
        tmp_path,
        clock,
        start_workers=True,
        flows_dir=str(ROOT / "flows"),
        templates_dir=str(ROOT / "templates"),
    )
    try:
        rt = runtime(stack.client)
        # Busy ingest (acks arriving) is when the worker measures and yields.
        assert rt.inbox is not None
        for i in range(20):
            await stack.sim.player.comment(IG_ACCOUNT, f"v{i}", "reel1", "PRICING")
        await _until(lambda: len(private_replies(stack)) == 20, stack)
        assert rt.dead == []
        # The public replies are due 20 s later: the dispatcher sleeps on the virtual clock.
        stack.clock.advance(timedelta(seconds=30))
        await _until(lambda: len(stack.sim.accepted()) >= 40, stack)
        assert stack.sim.refused() == [] and rt.dead == []
        assert to_ms(stack.clock.now()) > 0
    finally:
        await stack.sim.close()


async def test_a_send_waits_for_the_acknowledged_backlog_not_for_the_flood_behind_it(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before a send, everything acknowledged so far is ingested; deliveries that keep pouring
    # in meanwhile must not keep the send waiting for ever.
    worker, writer = stack.rt.worker, stack.rt.inbox
    assert worker is not None and writer is not None
    for i in range(40):
        assert await post_signed(stack.client, ig_dm(f"m.a{i}", "hi", user=f"1{i:05d}")) == 200
    head = writer.last_id
    more = iter(range(10_000))
    ingest = worker._ingest

    async def flooded(parsed: Any) -> None:
        await ingest(parsed)
        for _ in range(300):  # a flood faster than ingest
            i = next(more)
            await post_signed(stack.client, ig_dm(f"m.b{i}", "hi", user=f"2{i:05d}"))

    monkeypatch.setattr(worker, "_ingest", flooded)
    await asyncio.wait_for(worker.settle_contact(IG_ACCOUNT, "100001"), timeout=30)
    assert worker.ingested_id >= head
    left = await stack.rows("SELECT count(*) FROM inbox WHERE state = 'new'")
    assert left[0][0] > 0  # the flood behind it waits for the worker, not for the send


async def test_a_delivery_ingest_cannot_take_is_kept_as_bad_and_the_rest_go_on(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bug that fails one delivery's ingest (never a storage error): before, it failed the
    # worker; now that one is kept as bad with the reason and the others are ingested.
    from bot import inbox_worker

    original = inbox_worker.first_seen

    async def failing(conn: aiosqlite.Connection, events: Any) -> Any:
        if any(ev.key == "mid:m.bug" for _, ev in events):
            raise ValueError("a bug on this one delivery")
        return await original(conn, events)

    monkeypatch.setattr(inbox_worker, "first_seen", failing)
    for mid, user in (("m.ok1", "u1"), ("m.bug", "u2"), ("m.ok2", "u3")):
        assert await post_signed(stack.client, ig_dm(mid, "hi", user=stack.user(user))) == 200
    await stack.process()
    states = await stack.rows("SELECT state, error FROM inbox ORDER BY id")
    assert [s for s, _ in states].count("bad") == 1
    assert "a bug on this one delivery" in [e for s, e in states if s == "bad"][0]
    contacts = {u for (u,) in await stack.rows("SELECT user_id FROM conversations")}
    assert contacts == {stack.user("u1"), stack.user("u3")}
    assert stack.rt.dead == []
