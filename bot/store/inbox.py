"""The inbox: every signed delivery, stored before Meta gets its 200.

Appends use group commit: one writer task takes everything queued since its last commit and
writes it as one transaction. Measured in issue 2: that kept about 80% of a bare handler's
throughput, where a transaction per request reached 25% and a timer-based flush added latency.

The inbox is its own SQLite file (`bot.inbox.sqlite3` beside `bot.sqlite3`) with its own
writer, so an ack never waits behind the engine's transactions: with one file, a batch of
flow starts held the only write lock for tens of milliseconds and acks queued behind it (p99
over 400 ms in bench/ingest.py). Exactly-once does not need the two files to commit together:
the worker commits a batch's events and effects in the main file first, then marks the
deliveries here; a crash between the two only makes it read them again, and the `events`
table (main file, same transaction as the effects) turns every event into a duplicate.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.clock import Clock, to_ms
from bot.errors import StoreUnavailable
from bot.metrics import Metrics
from bot.store.db import Database, fetch_all
from bot.store.migrations import INBOX_STATE_CHECK, Migration

__all__ = [
    "BadDelivery",
    "INBOX_MIGRATIONS",
    "InboxRow",
    "InboxWriter",
    "adopt_legacy_inbox",
    "bad_deliveries",
    "claim_new",
    "inbox_backlog",
    "inbox_counts",
    "inbox_path",
    "mark_processed",
    "open_inbox",
    "prune_processed",
    "replay_deliveries",
]

log = logging.getLogger(__name__)

# The inbox file's own migrations (`PRAGMA user_version` counts them as for the main file).
INBOX_MIGRATIONS: list[Migration] = [
    """
    CREATE TABLE inbox (
        id INTEGER PRIMARY KEY,
        received_at INTEGER NOT NULL,
        body BLOB NOT NULL,
        state TEXT NOT NULL DEFAULT 'new' CHECK (state IN ('new', 'done', 'bad')),
        events INTEGER,
        error TEXT,
        processed_at INTEGER
    );
    CREATE INDEX inbox_new ON inbox (id) WHERE state = 'new';
    """,
    # 2: every append paid for a temporary b-tree of the state list (INBOX_STATE_CHECK).
    INBOX_STATE_CHECK,
    # 3: `/healthz` counts the bad deliveries from an index of them alone: counting by state
    # read the whole file, on the loop, at every health check (236 ms for 500,000 rows).
    "CREATE INDEX inbox_bad ON inbox (id) WHERE state = 'bad';",
]


def inbox_path(main: Path) -> Path:
    """The inbox file beside the main one: `data/bot.sqlite3` -> `data/bot.inbox.sqlite3`."""
    return main.with_name(f"{main.stem}.inbox{main.suffix or '.sqlite3'}")


async def open_inbox(main: Path, synchronous: str = "NORMAL", *, inline: bool = False) -> Database:
    return await Database.open(inbox_path(main), synchronous, INBOX_MIGRATIONS, inline=inline)


async def adopt_legacy_inbox(main: Database, inbox: Database) -> int:
    """Move deliveries that an earlier version stored in the main file's `inbox` table.

    Copied first, deleted after: a crash in between leaves copies that the `events` table
    turns into duplicates, never a lost delivery. The emptied table stays (migrations that
    shipped are never edited).
    """
    rows = await fetch_all(
        main.reader,
        "SELECT received_at, body, state, events, error, processed_at FROM inbox ORDER BY id",
    )
    if not rows:
        return 0
    async with inbox.transaction() as conn:
        await conn.executemany(
            "INSERT INTO inbox (received_at, body, state, events, error, processed_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [tuple(r) for r in rows],
        )
    async with main.transaction() as conn:
        await conn.execute("DELETE FROM inbox")
    log.info("moved %d stored deliveries to the inbox file %s", len(rows), inbox.path)
    return len(rows)


class InboxWriter:
    """Group commit. Per request only a future and a list append: every line run per request
    costs several times its isolated time under load (bench/ingest.py), so the time stamp, the
    metric and the arrival time are taken once per batch, and the loop is looked up once:
    `asyncio.get_running_loop()` makes a getpid system call each time (CPython 3.11 checks
    for a fork), one more per webhook than a bare handler makes (seen with `strace -c`)."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        max_batch: int = 1024,
        max_pending_bytes: int = 256 * 1024 * 1024,
        metrics: Metrics | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._max_batch = max_batch
        # Appends waiting for their commit hold their bodies: a store that stalls while
        # deliveries pour in must answer 503 (Meta retries), not grow memory without bound.
        self._max_pending_bytes = max_pending_bytes
        self._metrics = metrics
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Set after each commit, so the inbox worker starts at once instead of polling.
        self.committed = asyncio.Event()
        # The id of the newest delivery committed (acknowledged): the sender has everything
        # up to it ingested before a send, however far behind the worker is.
        self.last_id = 0
        self._pending_bytes = 0
        self._last_append = float("-inf")
        self._committing = False
        self._last_batch = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="inbox-writer")

    async def append(self, body: bytes) -> None:
        """Return once `body` is committed; raise StoreUnavailable if it could not be."""
        if self._closing or self._loop is None:
            raise StoreUnavailable("the bot is shutting down" if self._closing else "not started")
        if self._pending_bytes + len(body) > self._max_pending_bytes and self._pending:
            raise StoreUnavailable("the inbox is behind: too many deliveries wait to be stored")
        fut: asyncio.Future[None] = self._loop.create_future()
        self._pending.append((body, fut))
        self._pending_bytes += len(body)
        self._wake.set()
        await fut

    def busy(self, within: float = 0.05) -> bool:
        """Whether webhooks are waiting to be stored or arrived in the last `within` seconds.

        The worker yields to them. Waiting appends count: while a long worker transaction
        holds the store, no new request arrives (every connection waits for its ack), so
        the time of the last arrival alone would say "quiet" exactly when it is not.
        """
        if self._pending or self._committing:
            return True
        return self._clock.monotonic() - self._last_append < within

    def flooded(self, batch: int = 8) -> bool:
        """Whether acks queue up: the last group commit took `batch` or more deliveries.

        Meta's webhooks at any rate a worker keeps up with commit one or two at a time;
        dozens a commit means many connections waiting for their 200 at once.
        """
        return self.busy() and self._last_batch >= batch

    async def close(self) -> None:
        """Stop taking appends, commit what is queued, and end the writer task."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                self._last_append = self._clock.monotonic()
                batch = self._pending[: self._max_batch]
                del self._pending[: len(batch)]
                self._pending_bytes -= sum(len(body) for body, _ in batch)
                self._last_batch = len(batch)
                self._committing = True
                try:
                    await self._commit(batch)
                finally:
                    self._committing = False
            if self._closing and not self._pending:
                return

    async def _commit(self, batch: list[tuple[bytes, asyncio.Future[None]]]) -> None:
        at = to_ms(self._clock.now())  # within a millisecond or two of each arrival
        try:
            async with self._db.transaction() as conn:
                # bytearray: the sqlite3 module binds it as it is, where `bytes` goes through
                # its adapter lookup, which raises and clears an AttributeError every row
                # (callgrind: 3,300 instructions a row against a copy of a few hundred bytes).
                await conn.executemany(
                    "INSERT INTO inbox (received_at, body) VALUES (?, ?)",
                    [(at, bytearray(body)) for body, _ in batch],
                )
                # Ids only grow (the pruner keeps the newest row): the batch's last is the
                # newest; one statement per commit, not per delivery.
                last = await fetch_all(conn, "SELECT last_insert_rowid()")
        except (sqlite3.Error, ValueError) as exc:
            log.error("inbox append of %d deliveries failed: %s", len(batch), exc)
            err = StoreUnavailable(f"the inbox could not be written: {exc}")
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(err)
            return
        self.last_id = max(self.last_id, int(last[0][0]))
        for _, fut in batch:
            if not fut.done():
                fut.set_result(None)
        if self._metrics is not None:
            self._metrics.inc("webhook_deliveries", len(batch), help="deliveries stored")
        self.committed.set()


@dataclass(frozen=True, slots=True)
class InboxRow:
    id: int
    received_at: int
    body: bytes


async def claim_new(db: Database, limit: int) -> list[InboxRow]:
    """The oldest unprocessed deliveries. Only the single inbox worker calls this."""
    rows = await fetch_all(
        db.reader,
        "SELECT id, received_at, body FROM inbox WHERE state = 'new' ORDER BY id LIMIT ?",
        (limit,),
    )
    return [InboxRow(int(r[0]), int(r[1]), bytes(r[2])) for r in rows]


async def mark_processed(
    db: Database, results: Sequence[tuple[int, int, str | None]], *, at_ms: int
) -> None:
    """After the worker's commit: (inbox id, new events, error); an error keeps it bad."""
    async with db.transaction() as conn:
        await conn.executemany(
            "UPDATE inbox SET state = ?, events = ?, error = ?, processed_at = ? WHERE id = ?",
            [("bad" if err else "done", n, err, at_ms, row_id) for row_id, n, err in results],
        )


async def inbox_backlog(db: Database, now_ms: int) -> dict[str, int | float | None]:
    """What a health check needs, from the two partial indexes only, in a thread: deliveries
    waiting, bad ones, and how long the oldest has waited (a stuck worker shows there first).

    Not the processed count: counting every row reads the whole file, which only grows.
    """
    row = (
        await fetch_all(
            db.background,
            "SELECT (SELECT count(*) FROM inbox WHERE state = 'new'),"
            " (SELECT count(*) FROM inbox WHERE state = 'bad'),"
            " (SELECT received_at FROM inbox WHERE state = 'new' ORDER BY id LIMIT 1)",
        )
    )[0]
    oldest = None if row[2] is None else max(0.0, (now_ms - int(row[2])) / 1000)
    return {"new": int(row[0]), "bad": int(row[1]), "oldest_new_age_s": oldest}


async def inbox_counts(db: Database) -> dict[str, int]:
    """Every state's count, for `bot status`: a scan of the whole file, so never on the loop
    of a daemon (`inbox_backlog` is for that)."""
    rows = await fetch_all(db.background, "SELECT state, count(*) FROM inbox GROUP BY state")
    counts = {"new": 0, "done": 0, "bad": 0}
    counts.update({str(r[0]): int(r[1]) for r in rows})
    return counts


async def prune_processed(
    db: Database,
    before_ms: int,
    *,
    chunk: int = 500,
    pause: Callable[[], Awaitable[bool]] | None = None,
) -> int:
    """Delete processed deliveries received before `before_ms`, oldest first; the count.

    The inbox otherwise grows by every webhook forever (`bot status` reads all of it), and
    nothing needs a processed body: the main file's `events` table is what makes a replay a
    duplicate. Bad deliveries stay for the operator, waiting ones for the worker, and the
    newest row whatever it is: without AUTOINCREMENT, SQLite would give its id again.

    Walked `chunk` rows at a time in id order, each step its own short transaction on the
    writer (an ack waits for one step at most), using nothing but the primary key. Ids grow
    with arrival, so the walk ends at the first `chunk` rows with nothing older than
    `before_ms`; a clock that jumped ahead for a moment leaves a few rows dated in the
    future, which the walk passes (only a jump lasting `chunk` deliveries would stop it,
    until their date). Between steps `pause` runs and says whether to go on (a daemon
    stopping does not). SQLite reuses the freed pages, so the file stops growing rather
    than shrinking. bench/prune.py (400,000 of 500,000 rows, 10 ms pauses): 9 s, a step 0.9
    ms (p99 6.5 to 7.4 ms), and an append meanwhile waited 11 to 13 ms at worst, the
    checkpoint's pass under the lock.
    """
    deleted = 0
    # max() alone is read off the b-tree's edge (with min() beside it in one SELECT, SQLite
    # read all 500,000 rows: 160 ms); each step seeks by id, so the walk needs no min().
    newest = (await fetch_all(db.reader, "SELECT max(id) FROM inbox"))[0][0]
    lo = -(1 << 63)
    while newest is not None and lo < newest:
        async with db.transaction() as conn:
            step = await fetch_all(
                conn,
                "SELECT id, received_at < ? FROM inbox WHERE id >= ? AND id < ? ORDER BY id"
                " LIMIT ?",
                (before_ms, lo, newest, chunk),
            )
            if not any(older for _, older in step):
                break
            last = step[-1][0]
            cur = await conn.execute(
                "DELETE FROM inbox WHERE id >= ? AND id <= ? AND state = 'done'"
                " AND received_at < ?",
                (lo, last, before_ms),
            )
            deleted += cur.rowcount
        lo = last + 1
        if pause is not None and not await pause():
            break
    return deleted


@dataclass(frozen=True, slots=True)
class BadDelivery:
    id: int
    received_at: int
    size: int
    error: str


async def bad_deliveries(db: Database, limit: int = 1000) -> list[BadDelivery]:
    """Deliveries kept as bad (not a webhook at all), oldest first, for `bot inbox`."""
    rows = await fetch_all(
        db.background,
        "SELECT id, received_at, length(body), error FROM inbox WHERE state = 'bad'"
        " ORDER BY id LIMIT ?",
        (limit,),
    )
    return [BadDelivery(int(r[0]), int(r[1]), int(r[2]), str(r[3] or "")) for r in rows]


async def replay_deliveries(db: Database, ids: Sequence[int] | None) -> int:
    """Bad deliveries back to the worker (all when `ids` is None); how many. Their events
    that were applied before stay duplicates (the `events` table), so nothing goes twice."""
    async with db.transaction() as conn:
        if ids is None:
            cur = await conn.execute(
                "UPDATE inbox SET state = 'new', error = NULL WHERE state = 'bad'"
            )
            return cur.rowcount
        total = 0
        for i in ids:
            cur = await conn.execute(
                "UPDATE inbox SET state = 'new', error = NULL WHERE id = ? AND state = 'bad'",
                (i,),
            )
            total += cur.rowcount
        return total
