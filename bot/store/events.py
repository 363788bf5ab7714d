"""Events between the inbox and the engine: seen once, queued per contact, set aside alone.

The inbox worker works in two steps (bot/inbox_worker.py). Ingest parses deliveries and, in
one transaction, records each event as seen (the `events` table: Meta retries and duplicates
deliveries) and queues the new ones here, one row each, with its contact. Apply hands queued
events to the engine and deletes them in the engine's transaction.

Queued per contact, so the sender can ask "has this contact written anything not applied
yet?" with one indexed read, and apply that contact's events before it sends (a STOP waiting
behind minutes of backlog must stop marketing sends at once). One row per event, so an event
the engine can't apply is set aside alone, with its reason, and the other 999 of its delivery
are not held back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import aiosqlite

from bot.clock import from_ms, to_ms
from bot.events import (
    Attachment,
    Comment,
    CommentVerb,
    Event,
    Message,
    OptIn,
    OptInKind,
    OptInStatus,
    Platform,
    Postback,
    Reaction,
    Read,
    Referral,
    Unknown,
)
from bot.store.db import fetch_all, fetch_one

__all__ = [
    "QueuedEvent",
    "SetAside",
    "any_queued",
    "claim_contact",
    "claim_one",
    "claim_queued",
    "contact_has_queued",
    "decode_event",
    "delete_queued",
    "encode_event",
    "first_seen",
    "queue_counts",
    "queue_events",
    "replay_set_aside",
    "set_aside",
    "set_aside_events",
]

_TYPES: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (Comment, Message, Postback, Referral, Reaction, Read, OptIn, Unknown)
}
_TIMES = frozenset({"timestamp", "watermark", "token_expiry"})
_ENUMS: Mapping[str, type[Any]] = {
    "platform": Platform,
    "verb": CommentVerb,
    "kind": OptInKind,
    "status": OptInStatus,
}


def encode_event(ev: Event) -> str:
    """The event as JSON: times in milliseconds, enums by value, ASCII only (a lone surrogate
    Meta sent in a text is escaped, never an encoding error on the way into SQLite)."""
    out: dict[str, Any] = {"_event": type(ev).__name__}  # not "type": Referral has one
    for f in fields(ev):
        value = getattr(ev, f.name)
        if isinstance(value, datetime):
            value = to_ms(value)
        elif f.name == "attachments":
            value = [[a.type, a.url] for a in value]
        elif f.name in _ENUMS and value is not None:
            value = value.value
        out[f.name] = value
    return json.dumps(out, separators=(",", ":"))


def decode_event(text: str) -> Event:
    """The event `encode_event` wrote."""
    data = json.loads(text)
    cls = _TYPES[data.pop("_event")]
    for name, value in list(data.items()):
        if value is None:
            continue
        if name in _TIMES:
            data[name] = from_ms(value)
        elif name == "attachments":
            data[name] = tuple(Attachment(t, u) for t, u in value)
        elif name in _ENUMS:
            data[name] = _ENUMS[name](value)
    event: Event = cls(**data)
    return event


@dataclass(frozen=True, slots=True)
class QueuedEvent:
    """A queued event as stored; `decode_event(text)` gives the event."""

    id: int
    inbox_id: int
    text: str


async def first_seen(
    conn: aiosqlite.Connection, events: Sequence[tuple[int, Event]]
) -> list[tuple[int, Event]]:
    """The events never seen before (in this batch or any earlier), recorded as seen."""
    new: dict[tuple[str, str], tuple[int, Event]] = {}
    for inbox_id, ev in events:
        new.setdefault((ev.account_id, ev.key), (inbox_id, ev))
    keys = list(new)
    for i in range(0, len(keys), 400):
        chunk = keys[i : i + 400]
        values = ",".join("(?, ?)" for _ in chunk)
        # One primary-key lookup per key; `(account_id, key) IN (VALUES ...)` of two or more
        # keys scanned every event ever seen, every batch.
        for account_id, key in await fetch_all(
            conn,
            f"SELECT e.account_id, e.key FROM (VALUES {values}) AS k"
            " CROSS JOIN events AS e ON e.account_id = k.column1 AND e.key = k.column2",
            [x for k in chunk for x in k],
        ):
            new.pop((account_id, key), None)
    await conn.executemany(
        "INSERT INTO events (account_id, key, user_id, kind, at, inbox_id)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [
            (ev.account_id, ev.key, ev.user_id, type(ev).__name__, to_ms(ev.timestamp), inbox_id)
            for inbox_id, ev in new.values()
        ],
    )
    return list(new.values())


async def queue_events(conn: aiosqlite.Connection, events: Sequence[tuple[int, Event]]) -> None:
    """Queue new events for the engine, in the ingest transaction that saw them first."""
    await conn.executemany(
        "INSERT INTO event_queue (account_id, user_id, at, inbox_id, event)"
        " VALUES (?, ?, ?, ?, ?)",
        [
            (ev.account_id, ev.user_id, to_ms(ev.timestamp), inbox_id, encode_event(ev))
            for inbox_id, ev in events
        ],
    )


def _queued(rows: Sequence[Any]) -> list[QueuedEvent]:
    return [QueuedEvent(int(r[0]), int(r[1]), str(r[2])) for r in rows]


async def claim_queued(conn: aiosqlite.Connection, limit: int) -> list[QueuedEvent]:
    """Inside the apply transaction: the oldest queued events (the lock keeps them ours)."""
    return _queued(
        await fetch_all(
            conn,
            "SELECT id, inbox_id, event FROM event_queue WHERE state = 'new' ORDER BY id LIMIT ?",
            (limit,),
        )
    )


async def claim_one(conn: aiosqlite.Connection, queue_id: int) -> list[QueuedEvent]:
    """Inside a transaction: one queued event by id, if it is still queued."""
    return _queued(
        await fetch_all(
            conn,
            "SELECT id, inbox_id, event FROM event_queue WHERE id = ? AND state = 'new'",
            (queue_id,),
        )
    )


async def claim_contact(
    conn: aiosqlite.Connection, account_id: str, user_id: str, limit: int
) -> list[QueuedEvent]:
    """Inside the apply transaction: one contact's queued events, oldest first."""
    return _queued(
        await fetch_all(
            conn,
            "SELECT id, inbox_id, event FROM event_queue WHERE state = 'new'"
            " AND account_id = ? AND user_id = ? ORDER BY at, id LIMIT ?",
            (account_id, user_id, limit),
        )
    )


async def any_queued(conn: aiosqlite.Connection) -> bool:
    """Whether any event waits for the engine: one read of the partial index."""
    return (
        await fetch_one(conn, "SELECT 1 FROM event_queue WHERE state = 'new' LIMIT 1") is not None
    )


async def contact_has_queued(conn: aiosqlite.Connection, account_id: str, user_id: str) -> bool:
    row = await fetch_one(
        conn,
        "SELECT 1 FROM event_queue WHERE state = 'new' AND account_id = ? AND user_id = ? LIMIT 1",
        (account_id, user_id),
    )
    return row is not None


async def delete_queued(conn: aiosqlite.Connection, ids: Sequence[int]) -> None:
    await conn.executemany("DELETE FROM event_queue WHERE id = ?", [(i,) for i in ids])


async def set_aside(conn: aiosqlite.Connection, queue_id: int, reason: str, at: datetime) -> None:
    """The engine could not apply this one event: kept with its reason for `bot inbox`."""
    await conn.execute(
        "UPDATE event_queue SET state = 'bad', error = ?, failed_at = ? WHERE id = ?",
        (reason[:2000], to_ms(at), queue_id),
    )


@dataclass(frozen=True, slots=True)
class SetAside:
    id: int
    inbox_id: int
    account_id: str
    user_id: str | None
    at: datetime
    kind: str
    error: str
    failed_at: datetime | None


async def set_aside_events(conn: aiosqlite.Connection, limit: int = 1000) -> list[SetAside]:
    rows = await fetch_all(
        conn,
        "SELECT id, inbox_id, account_id, user_id, at, event, error, failed_at"
        " FROM event_queue WHERE state = 'bad' ORDER BY id LIMIT ?",
        (limit,),
    )
    return [
        SetAside(
            id=int(r[0]),
            inbox_id=int(r[1]),
            account_id=r[2],
            user_id=r[3],
            at=from_ms(r[4]),
            kind=str(json.loads(r[5]).get("_event", "?")),
            error=r[6] or "",
            failed_at=None if r[7] is None else from_ms(r[7]),
        )
        for r in rows
    ]


async def replay_set_aside(conn: aiosqlite.Connection, ids: Sequence[int] | None) -> int:
    """Queue set-aside events again (all of them when `ids` is None); how many."""
    if ids is None:
        cur = await conn.execute(
            "UPDATE event_queue SET state = 'new', error = NULL, failed_at = NULL"
            " WHERE state = 'bad'"
        )
        return cur.rowcount
    total = 0
    for i in ids:
        cur = await conn.execute(
            "UPDATE event_queue SET state = 'new', error = NULL, failed_at = NULL"
            " WHERE id = ? AND state = 'bad'",
            (i,),
        )
        total += cur.rowcount
    return total


async def queue_counts(conn: aiosqlite.Connection) -> dict[str, int]:
    """Events waiting for the engine and events set aside, from the partial indexes."""
    row = await fetch_one(
        conn,
        "SELECT (SELECT count(*) FROM event_queue WHERE state = 'new'),"
        " (SELECT count(*) FROM event_queue WHERE state = 'bad')",
    )
    assert row is not None
    return {"queued": int(row[0]), "set_aside": int(row[1])}
