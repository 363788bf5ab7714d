"""`bot status` sees a viral post coming: queued messages projected to expire under the cap."""

from __future__ import annotations

from datetime import timedelta

from bot.policy import Intent
from bot.status import collect_status
from bot.store.outbox import SendKind, enqueue
from tests.conftest import IG_ACCOUNT, Stack


async def test_status_projects_expiries_when_the_queue_outgrows_the_hourly_cap(
    stack: Stack,
) -> None:
    t0 = stack.clock.now()
    stack.clock.set(t0 + timedelta(hours=23, minutes=50))  # windows close in ten minutes
    db = stack.rt.db
    assert db is not None
    async with db.transaction() as conn:
        for i in range(300):
            await enqueue(
                conn,
                account_id=IG_ACCOUNT,
                user_id=f"u{i}",
                kind=SendKind.MESSAGE,
                intent=Intent(),
                message={"text": "hi"},
                due_at=stack.clock.now(),
                deadline=t0 + timedelta(hours=24),
                now=stack.clock.now(),
            )
    status = await collect_status(
        stack.rt.config, db, stack.clock, stack.rt.profile, stack.rt.inbox_db
    )
    ig = next(a for a in status["accounts"] if a["id"] == IG_ACCOUNT)
    dms = ig["dms"]
    # 200 go at once; then one every 18 s: the 34th and later miss the ten-minute deadline.
    assert (dms["queued"], dms["cap_per_hour"], dms["sent_last_hour"]) == (300, 200, 0)
    assert dms["projected_expiries"] == 67
    assert ig["next_due"] is not None
    assert ig["private_replies"]["projected_expiries"] == 0


async def test_status_shows_public_replies_as_their_own_queue_without_an_hourly_cap(
    stack: Stack,
) -> None:
    db = stack.rt.db
    assert db is not None
    now = stack.clock.now()
    async with db.transaction() as conn:
        for kind, comment_id, deadline in (
            (SendKind.PUBLIC_REPLY, "c1", None),
            (SendKind.MESSAGE, None, now + timedelta(hours=24)),
        ):
            await enqueue(
                conn,
                account_id=IG_ACCOUNT,
                user_id="u1",
                kind=kind,
                intent=Intent(),
                message={"text": "hi"},
                due_at=now,
                deadline=deadline,
                now=now,
                comment_id=comment_id,
            )
    status = await collect_status(stack.rt.config, db, stack.clock, stack.rt.profile)
    ig = next(a for a in status["accounts"] if a["id"] == IG_ACCOUNT)
    assert (ig["dms"]["queued"], ig["dms"]["cap_per_hour"]) == (1, 200)
    public = ig["public_replies"]
    assert (public["queued"], public["cap_per_hour"], public["projected_expiries"]) == (1, None, 0)
    assert ig["private_replies"]["queued"] == 0
