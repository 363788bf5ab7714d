"""One SQLite file in WAL mode, versioned migrations, and a single writer.

aiosqlite runs one thread per connection. Two writing connections would make SQLite's busy
handler sleep-poll (1 ms to 100 ms steps), which wrecks webhook ack latency; so every write
goes through one connection, and transactions take turns on an asyncio lock, which is fair
and never polls. Readers (status, admin) get their own connection.

A file can open `inline` instead: one plain sqlite3 connection called on the event loop
(bot/store/inline.py), with no thread hop per call. `bot simulate`'s throwaway file does, and
so does the daemon's inbox file with `synchronous=NORMAL`, where a commit is a write to the WAL
in the page cache and never an fsync: there the threads cost more than the SQL (bench/ingest.py
in docs/benchmarks.md). What would fsync on the loop is moved off it: the inline connection
never checkpoints; a thread does, every `CHECKPOINT_EVERY` commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import aiosqlite

from bot.errors import StoreUnavailable
from bot.store.inline import InlineConnection
from bot.store.migrations import MIGRATIONS, Migration, RewriteCheck

__all__ = ["CHECKPOINT_EVERY", "Database", "fetch_all", "fetch_one"]

log = logging.getLogger(__name__)

# An inline WAL file is checkpointed in a thread after this many commits: an inbox batch
# writes about six pages, so the WAL stays near SQLite's own default of 1000 pages.
CHECKPOINT_EVERY = 150


async def fetch_all(
    conn: aiosqlite.Connection, sql: str, params: Iterable[Any] = ()
) -> list[sqlite3.Row]:
    """Rows of a query in one hop to the connection's thread.

    `async with conn.execute(...) as cur` costs three (execute, fetch, close), and each hop
    costs about 0.2 ms here: a flow start went from 14.6 hops to 8 (bench/ingest.py).
    """
    return list(await conn.execute_fetchall(sql, params))


async def fetch_one(
    conn: aiosqlite.Connection, sql: str, params: Iterable[Any] = ()
) -> sqlite3.Row | None:
    """The first row of a query that returns at most a few, in one hop."""
    rows = await conn.execute_fetchall(sql, params)
    return next(iter(rows), None)


class Database:
    def __init__(
        self,
        path: Path,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        checkpointer: aiosqlite.Connection | None = None,
    ):
        self.path = path
        self._writer = writer
        self._reader = reader
        self._lock = asyncio.Lock()  # FIFO-fair: writers take turns in arrival order
        # Inline WAL files only: the thread that checkpoints, and commits since it last ran.
        self._checkpointer = checkpointer
        self._commits = 0
        self._checkpoint: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        path: Path,
        synchronous: str = "NORMAL",
        migrations: Sequence[Migration] = MIGRATIONS,
        *,
        inline: bool = False,
    ) -> Database:
        """`inline`: SQLite runs on the event loop, not in aiosqlite's threads (bot/store/
        inline.py); never with `synchronous=FULL`, whose every commit is an fsync."""
        if inline and synchronous == "FULL":
            raise ValueError("an inline database would fsync on the event loop at every commit")
        if str(path) != ":memory:":
            path.parent.mkdir(parents=True, exist_ok=True)
        connect = _connect_inline if inline else _connect
        try:
            writer = await connect(path)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open the database {path}: {exc}") from exc
        try:
            await _configure(writer, synchronous)
            await migrate(writer, migrations)
            if inline:
                # One connection serves both. A transaction never yields to the loop here (no
                # thread to wait for), so no read can run inside one and see it half done;
                # and the one page cache stays warm, where a reader's is dropped at every
                # commit of the other connection.
                if synchronous == "OFF":
                    return cls(path, writer, writer)
                # WAL: a checkpoint fsyncs, so it runs in a thread, on a connection of its own
                # (a PASSIVE checkpoint never blocks the writer). Another writer holding the
                # file's lock makes a commit fail after a short wait, not stall the loop for
                # seconds; only another process could, and the daemon runs none.
                await writer.execute("PRAGMA wal_autocheckpoint = 0")
                await writer.execute("PRAGMA busy_timeout = 50")
                checkpointer = await _connect(path)
                try:
                    await _configure(checkpointer, synchronous)
                except BaseException:
                    await checkpointer.close()
                    raise
                return cls(path, writer, writer, checkpointer)
            reader = await connect(path)
            await _configure(reader, synchronous)
            await reader.execute("PRAGMA query_only = ON")
        except BaseException as exc:
            await writer.close()
            if isinstance(exc, sqlite3.Error):  # one line for the operator, not a traceback
                raise StoreUnavailable(f"cannot open the database {path}: {exc}") from exc
            raise
        return cls(path, writer, reader)

    async def close(self) -> None:
        if self._checkpoint is not None:
            await self._checkpoint
        if self._checkpointer is not None:
            await self._checkpointer.close()
        if self._reader is not self._writer:
            await self._reader.close()
        await self._writer.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction at a time; rolled back whole if anything inside fails."""
        async with self._lock:
            try:
                await self._writer.execute("BEGIN IMMEDIATE")
                yield self._writer
            except BaseException:
                # Also when cancelled mid-BEGIN: the connection's thread runs its queue in
                # order, so this ROLLBACK comes after whatever was already submitted.
                with contextlib.suppress(sqlite3.Error):
                    await asyncio.shield(self._writer.execute("ROLLBACK"))
                raise
            else:
                await self._writer.execute("COMMIT")
                if self._checkpointer is not None:
                    self._committed()

    def _committed(self) -> None:
        self._commits += 1
        if self._commits >= CHECKPOINT_EVERY and self._checkpoint is None:
            self._commits = 0
            self._checkpoint = asyncio.create_task(self._run_checkpoint(), name="checkpoint")

    async def _run_checkpoint(self) -> None:
        assert self._checkpointer is not None
        try:
            # The bulk while writers go on (its fsync took up to 126 ms under load: held
            # between transactions, that was the acks' p99), then the few frames committed
            # meanwhile between two transactions, as SQLite's own autocheckpoint runs: SQLite
            # only starts the WAL over once all of it is copied, which under steady load a
            # checkpoint racing the commits never achieves.
            await self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")
            async with self._lock:
                await self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:  # the next one tries again; the WAL only grows meanwhile
            log.warning("checkpoint of %s failed: %s", self.path, exc)
        finally:
            self._checkpoint = None

    @property
    def reader(self) -> aiosqlite.Connection:
        return self._reader

    @property
    def background(self) -> aiosqlite.Connection:
        """A connection in a thread, for a read that may take long: an inline file's reader
        is the loop itself, where it would hold up every webhook's ack meanwhile. A throwaway
        file (`synchronous=OFF`, `bot simulate`) has only its inline one, and no acks."""
        return self._checkpointer or self._reader

    async def schema_version(self) -> int:
        async with self._reader.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0


async def _connect(path: Path) -> aiosqlite.Connection:
    return await aiosqlite.connect(path, isolation_level=None)


async def _connect_inline(path: Path) -> aiosqlite.Connection:
    conn = InlineConnection.connect(path)
    # A month of 10,000 contacts is tens of MB: keep it in the page cache (64 MB at most).
    await conn.execute("PRAGMA cache_size = -65536")
    # Typed as what it stands in for: it has every method the store calls on one.
    return cast(aiosqlite.Connection, conn)


async def _configure(conn: aiosqlite.Connection, synchronous: str) -> None:
    # OFF only for `bot simulate`'s throwaway file: a crash there loses nothing anyone keeps.
    if synchronous not in {"NORMAL", "FULL", "OFF"}:
        raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
    if synchronous == "OFF":
        # Only this process ever opens the throwaway file: the rollback journal in memory and
        # the lock held throughout make a commit a few page writes, not a WAL append plus
        # checkpoints (COMMIT was a third of SQLite's time in a simulated month).
        await conn.execute("PRAGMA journal_mode = MEMORY")
        await conn.execute("PRAGMA locking_mode = EXCLUSIVE")
    else:
        await conn.execute("PRAGMA journal_mode = WAL")
    await conn.execute(f"PRAGMA synchronous = {synchronous}")
    await conn.execute("PRAGMA busy_timeout = 5000")
    await conn.execute("PRAGMA foreign_keys = ON")


async def migrate(conn: aiosqlite.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Apply every migration newer than the file's `user_version`, each in its own transaction."""
    async with conn.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    version = int(row[0]) if row else 0
    if version > len(migrations):
        raise StoreUnavailable(
            f"the database is at schema version {version}, newer than this bot knows "
            f"({len(migrations)}): upgrade the bot"
        )
    for number, script in enumerate(migrations[version:], start=version + 1):
        await conn.execute("BEGIN IMMEDIATE")
        try:
            if isinstance(script, RewriteCheck):
                await _rewrite_check(conn, script)
            else:
                for statement in _statements(script):
                    await conn.execute(statement)
            await conn.execute(f"PRAGMA user_version = {number}")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")
        log.info("database migrated to schema version %d", number)
    return len(migrations)


async def _rewrite_check(conn: aiosqlite.Connection, change: RewriteCheck) -> None:
    """Swap one CHECK clause in the table's stored CREATE statement, inside the caller's
    transaction; a new `schema_version` makes every connection read the schema again."""
    async with conn.execute(
        "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?", (change.table,)
    ) as cur:
        row = await cur.fetchone()
    sql = str(row[0]) if row else ""
    if change.old not in sql:
        if change.new in sql:
            return
        raise StoreUnavailable(
            f"table {change.table!r} does not have the constraint this migration replaces"
            f" ({change.old}): the file was not made by this bot"
        )
    async with conn.execute("PRAGMA schema_version") as cur:
        row = await cur.fetchone()
    version = int(row[0]) if row else 0
    await conn.execute("PRAGMA writable_schema = ON")
    try:
        await conn.execute(
            "UPDATE sqlite_schema SET sql = ? WHERE type = 'table' AND name = ?",
            (sql.replace(change.old, change.new), change.table),
        )
        await conn.execute(f"PRAGMA schema_version = {version + 1}")
    finally:
        await conn.execute("PRAGMA writable_schema = OFF")


def _statements(script: str) -> list[str]:
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out
