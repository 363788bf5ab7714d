"""The inline store: SQLite on the loop for the inbox (synchronous=NORMAL), with checkpoints
moved to a thread and a short wait for a lock, so nothing there can stall the loop for long."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st

from bot.clock import VirtualClock
from bot.errors import StoreUnavailable
from bot.store.db import CHECKPOINT_EVERY, Database, fetch_all
from bot.store.inbox import INBOX_MIGRATIONS, InboxWriter, prune_processed
from tests.conftest import ig_comment, post_signed, query, runtime


def _wal_size(path: Path) -> int:
    return os.path.getsize(f"{path}-wal")


async def _fill(db: Database, commits: int, row: bytes) -> None:
    for _ in range(commits):
        async with db.transaction() as conn:
            await conn.executemany(
                "INSERT INTO inbox (received_at, body) VALUES (?, ?)", [(1, row)] * 8
            )
        await asyncio.sleep(0)  # an inline commit never yields; the daemon's loop does


async def test_an_inline_wal_file_is_checkpointed_by_a_thread_and_its_wal_stays_small(
    tmp_path: Path,
) -> None:
    path = tmp_path / "inbox.sqlite3"
    db = await Database.open(path, "NORMAL", INBOX_MIGRATIONS, inline=True)
    try:
        row = b"x" * 2000  # about 4 pages a commit
        await _fill(db, 20 * CHECKPOINT_EVERY, row)  # some 50 MB through the WAL
        wal = _wal_size(path)
        # Without the checkpointer the WAL would hold every page written, about 94 MB (the
        # inline connection never checkpoints itself): it is reused from its start instead,
        # and its size is how far it got ahead of the checkpoints (more on a loaded machine).
        assert wal < 24 * 1024 * 1024, wal
        rows = await db.reader.execute_fetchall("SELECT count(*) FROM inbox")
        assert list(rows)[0][0] == 20 * CHECKPOINT_EVERY * 8
    finally:
        await db.close()
    with sqlite3.connect(path) as conn:  # everything is in the file once closed
        assert (
            conn.execute("SELECT count(*) FROM inbox").fetchone()[0] == 20 * CHECKPOINT_EVERY * 8
        )


async def test_no_inline_file_with_synchronous_full(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fsync"):
        await Database.open(tmp_path / "x.sqlite3", "FULL", INBOX_MIGRATIONS, inline=True)


async def test_a_foreign_lock_on_the_inbox_gives_a_quick_503_and_the_retry_is_stored(
    client: TestClient[Any, Any],
) -> None:
    db = runtime(client).inbox_db
    assert db is not None
    other = sqlite3.connect(db.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process writing the inbox file
        started = time.monotonic()
        assert await post_signed(client, ig_comment("c1", "PRICING")) == 503
        # The loop waited about busy_timeout (50 ms), not the 5 s of the threaded files.
        assert time.monotonic() - started < 1.0
        other.execute("ROLLBACK")
    finally:
        other.close()
    assert await post_signed(client, ig_comment("c1", "PRICING")) == 200
    assert await query(runtime(client), "SELECT count(*) FROM inbox") == [(1,)]


async def test_the_writer_stores_the_exact_bytes_as_a_blob(tmp_path: Path) -> None:
    # Meta signs the raw bytes; they are stored as they came, whatever they hold (not text).
    clock = VirtualClock()
    db = await Database.open(tmp_path / "inbox.sqlite3", "NORMAL", INBOX_MIGRATIONS, inline=True)
    writer = InboxWriter(db, clock)
    with pytest.raises(StoreUnavailable):  # not started: refused, never a hang
        await writer.append(b"{}")
    writer.start()
    bodies = [b'{"a": "\xc3\xa9"}', b"\xff\xfe not utf-8", b""]
    try:
        await asyncio.gather(*(writer.append(b) for b in bodies))
    finally:
        await writer.close()
    rows = [tuple(r) for r in await fetch_all(db.reader, "SELECT typeof(body), body FROM inbox")]
    await db.close()
    assert rows == [("blob", b) for b in bodies]


async def test_the_writer_reports_a_flood_when_acks_queue_up_by_the_dozen(tmp_path: Path) -> None:
    clock = VirtualClock()
    db = await Database.open(tmp_path / "inbox.sqlite3", "NORMAL", INBOX_MIGRATIONS, inline=True)
    writer = InboxWriter(db, clock)
    writer.start()
    try:
        for _ in range(3):  # one at a time, as Meta's webhooks come at a sustainable rate
            await writer.append(b"{}")
        assert writer.busy() and not writer.flooded()
        await asyncio.gather(*(writer.append(b"{}") for _ in range(20)))  # 20 waiting at once
        assert writer.flooded()
        clock.advance(timedelta(seconds=1))  # and it ends when they do
        assert not writer.busy() and not writer.flooded()
    finally:
        await writer.close()
        await db.close()


async def test_deliveries_waiting_for_a_stalled_store_are_bounded_and_the_rest_get_503(
    tmp_path: Path,
) -> None:
    # A commit that stalls (a slow disk) while deliveries pour in: what waits holds its body
    # in memory, so beyond a bound the writer refuses (503, Meta retries) instead of growing.
    clock = VirtualClock()
    db = await Database.open(tmp_path / "inbox.sqlite3", "NORMAL", INBOX_MIGRATIONS, inline=True)
    writer = InboxWriter(db, clock, max_pending_bytes=10_000)
    writer.start()
    stall = asyncio.Event()
    commit = writer._commit

    async def stalled(batch: Any) -> None:
        await stall.wait()
        await commit(batch)

    writer._commit = stalled  # type: ignore[method-assign]
    try:
        waiting = [asyncio.ensure_future(writer.append(b"x" * 1000)) for _ in range(30)]
        await asyncio.sleep(0.01)
        refused = [t for t in waiting if t.done() and isinstance(t.exception(), StoreUnavailable)]
        assert len(refused) >= 15  # no more than about 10 KB of bodies wait
        stall.set()
        await asyncio.gather(*waiting, return_exceptions=True)
        stored = await fetch_all(db.reader, "SELECT count(*) FROM inbox")
        assert stored[0][0] == 30 - len(refused)  # every one not refused was stored
    finally:
        stall.set()
        await writer.close()
        await db.close()


def _ephemeral_tables(path: Path, sql: str) -> int:
    with sqlite3.connect(path) as conn:
        return [row[1] for row in conn.execute(f"EXPLAIN {sql}")].count("OpenEphemeral")


async def test_state_checks_are_rewritten_in_place_and_still_refuse_other_states(
    tmp_path: Path,
) -> None:
    # A file as the previous version left it: only the first inbox migration, with rows.
    path = tmp_path / "inbox.sqlite3"
    old = await Database.open(path, "NORMAL", INBOX_MIGRATIONS[:1], inline=True)
    async with old.transaction() as conn:
        await conn.executemany(
            "INSERT INTO inbox (received_at, body, state) VALUES (?, ?, ?)",
            [(1, b"a", "new"), (2, b"b", "done"), (3, b"c", "bad")],
        )
    await old.close()
    insert = "INSERT INTO inbox (received_at, body) VALUES (1, x'00')"
    # The IN list is a temporary b-tree built for every row written: what migration 2 removes.
    assert _ephemeral_tables(path, insert) == 1

    db = await Database.open(path, "NORMAL", INBOX_MIGRATIONS, inline=True)
    try:
        assert await db.schema_version() == len(INBOX_MIGRATIONS)
        async with db.transaction() as conn:
            await conn.execute(insert)
        with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
            async with db.transaction() as conn:
                await conn.execute("UPDATE inbox SET state = 'lost' WHERE id = 1")
    finally:
        await db.close()
    assert _ephemeral_tables(path, insert) == 0
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        states = conn.execute("SELECT state FROM inbox ORDER BY id").fetchall()
        assert [s for (s,) in states] == ["new", "done", "bad", "new"]

    # The main file's outbox, from an empty file, gets the same treatment (migration 7).
    main = await Database.open(tmp_path / "bot.sqlite3")
    await main.close()
    outbox_update = "UPDATE outbox SET state = 'sent' WHERE id = 1"
    assert _ephemeral_tables(tmp_path / "bot.sqlite3", outbox_update) == 0
    with sqlite3.connect(tmp_path / "bot.sqlite3") as conn:
        conn.execute(
            "INSERT INTO outbox (account_id, kind, intent, body, due_at, created_at)"
            " VALUES ('a', 'dm', 'reply', '{}', 0, 0)"
        )
        with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
            conn.execute("UPDATE outbox SET state = 'maybe' WHERE id = 1")


async def test_a_state_check_rewrite_refuses_a_file_it_does_not_know(tmp_path: Path) -> None:
    from bot.errors import StoreUnavailable

    path = tmp_path / "inbox.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE inbox (id INTEGER PRIMARY KEY, state TEXT)")
        conn.execute("PRAGMA user_version = 1")
    with pytest.raises(StoreUnavailable, match="does not have the constraint"):
        await Database.open(path, "NORMAL", INBOX_MIGRATIONS, inline=True)


async def test_a_batch_that_stalled_does_not_idle_the_worker_for_ten_times_as_long(
    tmp_path: Path,
) -> None:
    from bot.inbox_worker import InboxWorker
    from bot.metrics import Metrics
    from tests.conftest import body_of

    clock = VirtualClock()
    main = await Database.open(tmp_path / "bot.sqlite3")
    inbox = await Database.open(tmp_path / "bot.inbox.sqlite3", "NORMAL", INBOX_MIGRATIONS)
    handled: list[int] = []

    class StallingSink:
        async def handle(self, conn: Any, events: Any) -> None:
            handled.append(len(events))
            clock.advance(timedelta(seconds=30))  # this batch took 30 s

    async with inbox.transaction() as conn:
        await conn.executemany(
            "INSERT INTO inbox (received_at, body) VALUES (?, ?)",
            [(1, body_of(ig_comment(f"c{i}", "PRICING", user=f"u{i}"))) for i in range(2)],
        )
    # Webhooks pour in all along, so the worker yields after each one-delivery batch.
    worker = InboxWorker(
        main,
        inbox,
        clock,
        StallingSink(),
        Metrics(),
        batch=1,
        ingest_busy=lambda: True,
        ingest_flooded=lambda: True,
    )
    task = asyncio.create_task(worker.run())
    try:
        # Uncapped, 30 s at a 10% share would idle it 270 s before the second delivery.
        for _ in range(300):
            if len(handled) == 2:
                break
            await asyncio.sleep(0.01)
        assert handled == [1, 1]
    finally:
        worker.stop()
        if not (await asyncio.wait({task}, timeout=2))[0]:
            task.cancel()  # still in its long idle: the failure above says enough
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await main.close()
        await inbox.close()


async def inbox_with(path: Path, table: list[tuple[int, int, bytes, str]]) -> Database:
    db = await Database.open(path, "NORMAL", INBOX_MIGRATIONS, inline=True)
    async with db.transaction() as conn:
        await conn.executemany(
            "INSERT INTO inbox (id, received_at, body, state) VALUES (?, ?, ?, ?)", table
        )
    return db


@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["new", "done", "bad"]),
            st.integers(0, 3),  # time steps between arrivals
            st.integers(0, 40),  # ids skipped (deleted rows, rolled-back appends)
        ),
        max_size=60,
    ),
    cutoff=st.integers(0, 100),
    chunk=st.integers(1, 25),
    jumps=st.lists(st.integers(0, 59), max_size=3),  # rows dated far ahead (a clock jump)
)
def test_pruning_deletes_exactly_the_processed_deliveries_older_than_the_cutoff(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[tuple[str, int, int]],
    cutoff: int,
    chunk: int,
    jumps: list[int],
) -> None:
    table, at, row_id = [], 0, 0
    for i, (state, step, gap) in enumerate(rows):
        at, row_id = at + step, row_id + 1 + gap
        table.append((row_id, at + (10**6 if i in jumps else 0), b"{}", state))

    async def run() -> tuple[int, list[tuple[Any, ...]]]:
        db = await inbox_with(tmp_path_factory.mktemp("prune") / "inbox.sqlite3", table)
        try:
            n = await prune_processed(db, cutoff, chunk=chunk)
            left = await fetch_all(db.reader, "SELECT id, received_at, body, state FROM inbox")
        finally:
            await db.close()
        return n, [tuple(r) for r in left]

    n, left = asyncio.run(run())
    # Processed and older than the cutoff, and not the newest row (whose id would come back).
    kept = [r for r in table if not (r[3] == "done" and r[1] < cutoff) or r is table[-1]]
    if len(set(jumps)) < chunk:  # fewer jumped rows than a step never stop the walk
        assert left == kept
    assert set(left) >= set(kept)  # never one that should stay
    assert n == len(table) - len(left)


async def test_a_stop_ends_the_prune_between_two_ranges(tmp_path: Path) -> None:
    table = [(i, 0, b"{}", "done") for i in range(1, 11)]
    db = await inbox_with(tmp_path / "inbox.sqlite3", table)
    statements: list[str] = []
    try:
        await db.reader.set_trace_callback(statements.append)
        assert await prune_processed(db, 1, chunk=3, pause=lambda: asyncio.sleep(0, False)) == 3
        assert await prune_processed(db, 1, chunk=3) == 6  # the rest but the newest
        await db.reader.set_trace_callback(None)
        rows = await fetch_all(db.reader, "SELECT id FROM inbox")
        # On the loop, on a file of months: by the primary key only, never a scan of it all.
        plans = [await fetch_all(db.reader, f"EXPLAIN QUERY PLAN {sql}") for sql in statements]
    finally:
        await db.close()
    assert [r[0] for r in rows] == [10]
    assert len(statements) > 6
    assert not [str(r[3]) for plan in plans for r in plan if str(r[3]).startswith("SCAN inbox")]
