"""The outbox's hot queries, as the sender and a start run them, are served by indexes: no
dispatcher tick reads every queued row (docs/benchmarks.md)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from bot.clock import VirtualClock
from bot.policy import Intent
from bot.store import outbox
from bot.store.db import Database
from bot.store.outbox import SendClass

ACCOUNT = "17841400000000001"

# The index each query must search (a scan is allowed only of a partial index made for it).
EXPECTED = {
    "claim_due": "outbox_pending_kind",
    "queue_status": "outbox_pending_kind",
    "next_due_at": "outbox_pending_kind",
    "pending_past_deadline": "outbox_pending_deadline",
    "any_past_deadline": "outbox_pending_deadline",
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
                current[0] = "queue_status"
                await outbox.queue_status(
                    db.reader,
                    ACCOUNT,
                    send_class=send_class,
                    now=now,
                    second=now - timedelta(seconds=1),
                    hour=now - timedelta(hours=1),
                )
                current[0] = "next_due_at"
                await outbox.next_due_at(db.reader, ACCOUNT, send_class=send_class, after=now)
            current[0] = "pending_past_deadline"
            await outbox.pending_past_deadline(conn, now)
            current[0] = "any_past_deadline"
            await outbox.any_past_deadline(db.reader, now)
            current[0] = "in_flight"
            await outbox.in_flight(conn)
            await outbox.in_flight(conn, lease_ended_by=now)
            await outbox.any_in_flight(db.reader, now)
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
                if name == "claim_due":
                    # The fenced UPDATE finds its rows by primary key from the indexed select.
                    on_outbox = [p for p in on_outbox if "INTEGER PRIMARY KEY" not in p]
                assert all(f"INDEX {EXPECTED[name]}" in p for p in on_outbox), f"{name}: {plan}"
                if name == "queue_status":
                    # The caps' counts read the index alone, never a send-log row.
                    on_log = [p for p in plan if " send_log " in f"{p} "]
                    assert on_log, plan
                    assert all("COVERING INDEX send_log_caps" in p for p in on_log), plan
    finally:
        await db.close()


async def test_settling_a_send_by_its_echo_reads_no_table_whole(
    tmp_path: Path, clock: VirtualClock
) -> None:
    # Every echo Meta sends back runs this, so it must not scan the send log or the outbox.
    db = await Database.open(tmp_path / "bot.sqlite3")
    try:
        sqls: list[str] = []
        now = clock.now()
        async with db.transaction() as conn:
            # A send whose outcome was unknown, which the echo then settles.
            item = await outbox.enqueue(
                conn,
                account_id=ACCOUNT,
                user_id="u1",
                kind=outbox.SendKind.MESSAGE,
                intent=Intent(),
                message={"text": "hello"},
                due_at=now,
                deadline=now + timedelta(hours=24),
                now=now,
            )
            assert item is not None
            await outbox.finish(conn, item, "unknown")
            await outbox.log_send(
                conn,
                at=now,
                outcome=outbox.Outcome.UNKNOWN,
                account_id=ACCOUNT,
                user_id="u1",
                kind=outbox.SendKind.MESSAGE,
                outbox_id=item,
            )
            await conn.set_trace_callback(sqls.append)
            settled = await outbox.reconcile_echo(
                conn, ACCOUNT, "u1", "mid.1", outbox.echo_metadata(item), now
            )
            await conn.set_trace_callback(None)
        assert settled == item
        assert any("send_log" in sql for sql in sqls) and any("outbox" in sql for sql in sqls)
        for sql in sqls:
            if not sql.lstrip().upper().startswith(("SELECT", "UPDATE")):
                continue
            async with db.reader.execute(f"EXPLAIN QUERY PLAN {sql}") as cur:
                plan = [str(r[3]) for r in await cur.fetchall()]
            assert not [p for p in plan if p.startswith("SCAN")], f"{sql}: {plan}"
    finally:
        await db.close()


async def test_saving_a_contact_finds_its_opt_in_tokens_by_index(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "bot.sqlite3")
    try:
        async with db.reader.execute(
            "EXPLAIN QUERY PLAN DELETE FROM optin_tokens WHERE account_id = ? AND user_id = ?",
            (ACCOUNT, "u1"),
        ) as cur:
            plan = [str(r[3]) for r in await cur.fetchall()]
        assert not [p for p in plan if p.startswith("SCAN")], plan
    finally:
        await db.close()
