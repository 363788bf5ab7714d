"""The daemon's two SQLite files, opened the one way every command opens them: checked, then
paired, so a main file that lost its history is never used beside an inbox that has one.

A deleted main file started afresh beside an inbox with history, and a retried old comment got
a second private reply: the main file's `events` table is what makes a replayed delivery a
duplicate. So each file records a random id and its creation time, and the id of the file it
is used with. A main file that is new (missing, empty, or never migrated) beside an inbox that
processed deliveries or was paired, a new inbox beside a paired main file, or two files paired
with others are refused; `accept_new` (`bot run --accept-new-database`) goes on, first marking
every event of every processed delivery the inbox still holds as seen in the main file.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bot.clock import Clock, from_ms, to_ms
from bot.delivery import MalformedDelivery, parse_delivery
from bot.store.db import Database, fetch_all
from bot.store.inbox import adopt_legacy_inbox, inbox_path, open_inbox
from bot.store.integrity import ACCEPT, CHECK_SECONDS, StoreRefused, check_file, damaged

__all__ = ["FileState", "Identity", "Mismatch", "open_store", "pairing_problem", "read_state"]

log = logging.getLogger(__name__)

# Outside the numbered migrations: it is read before they run (a file that is new must be
# told from one with history before migrating makes it look old), by any version of the bot.
_IDENTITY = """
CREATE TABLE IF NOT EXISTS store_identity (
    role TEXT PRIMARY KEY CHECK (role = 'self' OR role = 'partner'),
    id TEXT NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID
"""


@dataclass(frozen=True, slots=True)
class Identity:
    id: str
    created_at: int  # ms since the epoch

    def __str__(self) -> str:
        return f"created {from_ms(self.created_at):%Y-%m-%d %H:%M} UTC"


@dataclass(frozen=True, slots=True)
class FileState:
    path: Path
    new: bool  # missing, empty, or never migrated: it holds no history
    own: Identity | None  # None: new, or made by a bot before identities
    partner: Identity | None
    processed: int = 0  # the inbox's processed deliveries


def read_state(path: Path, *, count_processed: bool = False) -> FileState:
    """What a checked file holds: whether it is new, its identity and its partner's, and (an
    inbox, if asked: it reads the whole table) how many deliveries it processed. Only reads,
    so a running daemon's files can be looked at."""
    if not path.exists() or path.stat().st_size == 0:
        return FileState(path, new=True, own=None, partner=None)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 2000")
        tables = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_schema")}
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        ids: dict[str, Identity] = {}
        if "store_identity" in tables:
            for role, id_, at in conn.execute("SELECT role, id, created_at FROM store_identity"):
                ids[str(role)] = Identity(str(id_), int(at))
        processed = 0
        if count_processed and "inbox" in tables:
            processed = int(
                conn.execute("SELECT count(*) FROM inbox WHERE state != 'new'").fetchone()[0]
            )
    except sqlite3.OperationalError as exc:  # locked, out of memory: not the file's fault
        raise StoreRefused(f"{path} cannot be read: {exc}") from None
    except sqlite3.DatabaseError as exc:
        raise damaged(path, str(exc)) from None
    finally:
        conn.close()
    return FileState(path, version == 0, ids.get("self"), ids.get("partner"), processed)


@dataclass(frozen=True, slots=True)
class Mismatch:
    """Why two files do not go together (`what`), and what the operator can do."""

    what: str
    remedy: str

    def __str__(self) -> str:
        return f"{self.what}. {self.remedy}"


def pairing_problem(main: FileState, inbox: FileState) -> Mismatch | None:
    """Why the two files do not go together, or None. Files of a bot from before identities
    pair as they are found, except a new main file beside an inbox that processed deliveries:
    that is the loss of history, whatever made the files."""
    seen = f"(every delivery {inbox.path} processed is then marked as seen)"
    if main.new and (inbox.processed or inbox.partner is not None):
        held = (
            f"holds {inbox.processed} deliveries processed with an earlier database"
            if inbox.processed
            else f"was used with an earlier database ({inbox.partner})"
        )
        return Mismatch(
            f"{main.path} is new, but the inbox {inbox.path} beside it {held}: that history"
            " is gone, so a delivery Meta sends again would be answered again",
            f"Restore {main.path} from a backup, or start once with `{ACCEPT}` {seen}",
        )
    if inbox.new and main.partner is not None:
        return Mismatch(
            f"{inbox.path} is new, but {main.path} was used with another inbox"
            f" ({main.partner}): what it held and had not processed yet is lost",
            f"Restore {inbox.path} from a backup, or start once with `{ACCEPT}`",
        )
    if main.new or inbox.new:
        return None
    if (main.partner is not None and main.partner != inbox.own) or (
        inbox.partner is not None and inbox.partner != main.own
    ):
        return Mismatch(
            f"{main.path} ({main.own or 'made before identities'}) and {inbox.path}"
            f" ({inbox.own or 'made before identities'}) were not used together: one was"
            " replaced, or restored from another backup",
            f"Restore both from the same backup, or start once with `{ACCEPT}` {seen}",
        )
    return None


def _preflight(
    main: Path, inbox: Path, monotonic: Callable[[], float], budget: float
) -> tuple[FileState, FileState]:
    for path in (main, inbox):
        check_file(path, monotonic=monotonic, budget=budget)
    main_state = read_state(main)
    return main_state, read_state(inbox, count_processed=main_state.new)


async def open_store(
    main: Path,
    synchronous: str,
    *,
    clock: Clock,
    accept_new: bool = False,
    main_inline: bool = False,
    inbox_inline: bool = False,
    budget: float = CHECK_SECONDS,
) -> tuple[Database, Database]:
    """The main file and its inbox, checked, opened (migrated) and paired; `StoreRefused`
    with one line if they can't be used as they are. The one way every command opens them."""
    # In a thread: reading a large file through takes seconds, and signals still work.
    main_state, inbox_state = await asyncio.to_thread(
        _preflight, main, inbox_path(main), clock.monotonic, budget
    )
    problem = pairing_problem(main_state, inbox_state)
    if problem and not accept_new:
        raise StoreRefused(str(problem))
    if accept_new and not problem:
        log.info("--accept-new-database: the two files go together, there is nothing to accept")
    db = await Database.open(main, synchronous, inline=main_inline)
    try:
        inbox = await open_inbox(main, synchronous, inline=inbox_inline)
        try:
            await adopt_legacy_inbox(db, inbox)
            if problem:
                log.warning("--accept-new-database: starting although %s", problem.what)
                await _mark_processed_seen(db, inbox)
            await _pair(db, inbox, main_state, inbox_state, to_ms(clock.now()))
        except BaseException:
            await inbox.close()
            raise
    except BaseException:
        await db.close()
        raise
    return db, inbox


async def _pair(
    db: Database, inbox: Database, main: FileState, box: FileState, now_ms: int
) -> None:
    """Give each file its identity and the other's, the main file first: a crash in between
    leaves an inbox that names no partner yet (the next start completes the pair) or its old
    one (the next start refuses), never a pair that passes for one it is not."""
    main_id = main.own or Identity(secrets.token_hex(8), now_ms)
    box_id = box.own or Identity(secrets.token_hex(8), now_ms)
    for database, own, partner, state in (
        (db, main_id, box_id, main),
        (inbox, box_id, main_id, box),
    ):
        if state.own == own and state.partner == partner:
            continue  # nothing to write: a running daemon's files are only read
        async with database.transaction() as conn:
            await conn.execute(_IDENTITY)
            await conn.executemany(
                "INSERT OR REPLACE INTO store_identity (role, id, created_at) VALUES (?, ?, ?)",
                [("self", own.id, own.created_at), ("partner", partner.id, partner.created_at)],
            )


async def _mark_processed_seen(db: Database, inbox: Database, chunk: int = 500) -> None:
    """Record every event of every processed delivery the inbox holds in the main file's
    `events`, as the inbox worker records what it processes, so none is answered again.

    Deliveries still waiting are left to the worker: they were acknowledged and never
    processed. Bad ones had no effect, so a copy Meta sends again is processed as new.
    """
    last, deliveries, events = -(1 << 63), 0, 0
    while True:
        rows = await fetch_all(
            inbox.background,
            "SELECT id, body FROM inbox WHERE id > ? AND state = 'done' ORDER BY id LIMIT ?",
            (last, chunk),
        )
        if not rows:
            break
        last = int(rows[-1][0])
        seen: list[tuple[str, str, str | None, str, int, int]] = []
        for inbox_id, body in rows:
            try:
                parsed = parse_delivery(bytes(body))
            except MalformedDelivery:
                continue
            seen.extend(
                (
                    ev.account_id,
                    ev.key,
                    ev.user_id,
                    type(ev).__name__,
                    to_ms(ev.timestamp),
                    inbox_id,
                )
                for ev in parsed.events
            )
        async with db.transaction() as conn:
            cur = await conn.executemany(
                "INSERT OR IGNORE INTO events (account_id, key, user_id, kind, at, inbox_id)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                seen,
            )
            events += max(cur.rowcount, 0)
        deliveries += len(rows)
    log.warning(
        "marked %d events of %d processed deliveries as seen in %s: Meta's copies of them will"
        " be duplicates; what the old database held (conversations, opt-ins, queued sends)"
        " is not restored",
        events,
        deliveries,
        db.path,
    )
