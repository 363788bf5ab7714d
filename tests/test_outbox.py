"""The outbox's hot queries, as the sender and a start run them, are served by indexes: no
dispatcher tick reads every queued row (docs/benchmarks.md)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from bot.clock import VirtualClock
from bot.store import outbox
from bot.store.db import Database
from bot.store.outbox import SendClass

ACCOUNT = "17841400000000001"

# The index each query must search (a scan is allowed only of a partial index made for it).
EXPECTED = {
    "claim_due": "outbox_pending_kind",
    "next_due_at": "outbox_pending_kind",
    "pending_past_deadline": "outbox_pending_deadline",
    "in_flight": "outbox_sending",
    "release_leases": "outbox_leased",
}


async def test_every_hot_outbox_query_uses_its_index_and_none_scans_the_table(
    tmp_path: Path, clock: VirtualClock
) -> None:
    db = await Database.open(tmp_path / "bot.sqlite3")
    try:
        now = clock.now()
        statements: dict[str, list[str]] = {}
        current = [""]

        def trace(sql: str) -> None:
            if "outbox" in sql and sql.lstrip().upper().startswith(("SELECT", "UPDATE")):
                statements.setdefault(current[0], []).append(sql)

        await db.reader.set_trace_callback(trace)
        async with db.transaction() as conn:
            await conn.set_trace_callback(trace)
            for send_class in SendClass:
                current[0] = "claim_due"
                await outbox.claim_due(
                    conn,
                    ACCOUNT,
                    send_class=send_class,
                    now=now,
                    limit=10,
                    owner="test",
                    lease_until=now + timedelta(minutes=2),
                )
                current[0] = "next_due_at"
                await outbox.next_due_at(db.reader, ACCOUNT, send_class=send_class, after=now)
            current[0] = "pending_past_deadline"
            await outbox.pending_past_deadline(conn, now)
            current[0] = "in_flight"
            await outbox.in_flight(conn)
            current[0] = "release_leases"
            await outbox.release_leases(conn)
            await conn.set_trace_callback(None)
        await db.reader.set_trace_callback(None)

        assert set(statements) == set(EXPECTED)
        for name, sqls in statements.items():
            for sql in sqls:
                async with db.reader.execute(f"EXPLAIN QUERY PLAN {sql}") as cur:
                    plan = [str(r[3]) for r in await cur.fetchall()]
                assert "SCAN outbox" not in plan, f"{name} scans the outbox: {plan}"
                on_outbox = [p for p in plan if " outbox " in f"{p} "]
                assert on_outbox, f"{name}: {plan}"
                assert all(f"INDEX {EXPECTED[name]}" in p for p in on_outbox), f"{name}: {plan}"
    finally:
        await db.close()
