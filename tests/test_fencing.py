"""Exactly once with two senders on one store: the outbox lease fences every step (claim,
mark sending, settle), so a sender whose lease ran out mid-batch never sends a row another
sender took over (issue 13, item 16)."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import aiohttp

from bot.graph import GraphClient
from bot.metrics import Metrics
from bot.policy import Intent
from bot.sender import Sender
from bot.store.db import Database
from bot.store.outbox import SendKind, enqueue
from tests.conftest import IG_ACCOUNT, Stack

S = timedelta(seconds=1)


async def test_a_sender_whose_lease_ran_out_mid_batch_never_sends_a_row_twice(
    stack: Stack,
) -> None:
    users = [stack.user(f"fan{i}") for i in range(6)]
    for name in (f"fan{i}" for i in range(6)):
        await stack.sim.player.dm(IG_ACCOUNT, name, "hi")
    await stack.process()
    db = stack.rt.db
    assert db is not None and stack.rt.sender is not None
    now = stack.clock.now()
    async with db.transaction() as conn:
        for user in users:
            await enqueue(
                conn,
                account_id=IG_ACCOUNT,
                user_id=user,
                kind=SendKind.MESSAGE,
                intent=Intent(),
                message={"text": f"hello {user}"},
                due_at=now,
                deadline=None,
                now=now,
            )
    # A second daemon on the same file: its own connection, sender and owner.
    second_db = await Database.open(db.path)
    async with aiohttp.ClientSession() as session:
        try:
            other = Sender(
                second_db,
                stack.clock,
                GraphClient(session, clock=stack.clock),
                stack.rt.profile,
                stack.rt.config,
                Metrics(),
            )
            assert other.owner != stack.rt.sender.owner
            # Each call takes 50 s: the first sender's two-minute lease on the rest of its
            # batch runs out while its third call is in flight.
            start = stack.clock.now()
            stack.sim.faults.latency = 50.0
            first = asyncio.create_task(stack.rt.sender.run_due())
            while True:
                wake = stack.clock.next_wake()
                if wake is not None and wake - start > 140 * S:
                    break  # the third call, due back at +150 s
                if wake is not None:
                    stack.clock.set(wake)
                await asyncio.sleep(0.001)
            stack.sim.faults.latency = 0.0
            stack.clock.set(start + 130 * S)  # the batch's lease is over; the call is not
            await other.run_due()  # takes over the rest of the batch and sends it
            stack.clock.set(start + 151 * S)
            await first
            await stack.sim.drain()
        finally:
            await second_db.close()
    texts = Counter(e.body["message"]["text"] for e in stack.sim.accepted())
    assert sorted(texts) == sorted(f"hello {u}" for u in users)
    assert set(texts.values()) == {1}, texts
    assert await stack.rows("SELECT state, count(*) FROM outbox GROUP BY state") == [("sent", 6)]
    sent = await stack.rows("SELECT count(*) FROM send_log WHERE outcome = 'sent'")
    assert sent == [(6,)]
