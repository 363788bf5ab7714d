"""The conversation runtime's rows: runs, starts (for the guards), notes, and contact data."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import aiosqlite

from bot.clock import from_ms, to_ms
from bot.events import Platform
from bot.flows.run import ContactView, GuardHistory, RunState
from bot.store.db import fetch_all, fetch_one

__all__ = [
    "add_notes",
    "any_run_due",
    "contact_view",
    "delete_run",
    "due_runs",
    "guard_history",
    "load_runs",
    "next_run_due",
    "record_start",
    "save_run",
    "update_contact",
]


async def load_runs(
    conn: aiosqlite.Connection, account_id: str, user_id: str
) -> dict[str, RunState]:
    return {
        r[0]: RunState.from_dict(json.loads(r[1]))
        for r in await fetch_all(
            conn,
            "SELECT flow_id, run FROM flow_runs WHERE account_id = ? AND user_id = ?",
            (account_id, user_id),
        )
    }


async def save_run(
    conn: aiosqlite.Connection, account_id: str, user_id: str, run: RunState, now: datetime
) -> None:
    due = run.wait_until if run.waiting_for is not None else None
    await conn.execute(
        "INSERT INTO flow_runs (account_id, user_id, flow_id, run, due_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (account_id, user_id, flow_id) DO UPDATE SET"
        " run = excluded.run, due_at = excluded.due_at, updated_at = excluded.updated_at",
        (
            account_id,
            user_id,
            run.flow_id,
            json.dumps(run.to_dict(), separators=(",", ":")),
            None if due is None else to_ms(due),
            to_ms(now),
        ),
    )


async def delete_run(
    conn: aiosqlite.Connection, account_id: str, user_id: str, flow_id: str
) -> None:
    await conn.execute(
        "DELETE FROM flow_runs WHERE account_id = ? AND user_id = ? AND flow_id = ?",
        (account_id, user_id, flow_id),
    )


async def due_runs(
    conn: aiosqlite.Connection, now: datetime, limit: int = 200
) -> list[tuple[str, str, RunState]]:
    return [
        (r[0], r[1], RunState.from_dict(json.loads(r[2])))
        for r in await fetch_all(
            conn,
            "SELECT account_id, user_id, run FROM flow_runs WHERE due_at IS NOT NULL"
            " AND due_at <= ? ORDER BY due_at LIMIT ?",
            (to_ms(now), limit),
        )
    ]


async def any_run_due(conn: aiosqlite.Connection, now: datetime) -> bool:
    """Whether `due_runs` has a row: one read, so a tick with no run due takes no write lock."""
    row = await fetch_one(
        conn,
        "SELECT 1 FROM flow_runs WHERE due_at IS NOT NULL AND due_at <= ? LIMIT 1",
        (to_ms(now),),
    )
    return row is not None


async def next_run_due(conn: aiosqlite.Connection) -> datetime | None:
    row = await fetch_one(conn, "SELECT min(due_at) FROM flow_runs WHERE due_at IS NOT NULL")
    return None if row is None or row[0] is None else from_ms(row[0])


async def record_start(
    conn: aiosqlite.Connection,
    account_id: str,
    user_id: str,
    flow_id: str,
    at: datetime,
    comment_id: str | None,
) -> None:
    await conn.execute(
        "INSERT INTO flow_starts (account_id, user_id, flow_id, at, comment_id)"
        " VALUES (?, ?, ?, ?, ?)",
        (account_id, user_id, flow_id, to_ms(at), comment_id),
    )


async def guard_history(
    conn: aiosqlite.Connection,
    account_id: str,
    user_id: str,
    now: datetime,
    comment_id: str | None,
) -> GuardHistory:
    # One query: the comment check rides on the user's starts (a comment has one author),
    # which flow_starts_user indexes; a lookup by comment id alone would scan the table.
    rows = await fetch_all(
        conn,
        "SELECT flow_id, max(at), sum(at > ?), coalesce(max(comment_id = ?), 0) FROM flow_starts"
        " WHERE account_id = ? AND user_id = ? GROUP BY flow_id",
        (to_ms(now - timedelta(hours=24)), comment_id, account_id, user_id),
    )
    handled: frozenset[str] = frozenset()
    if comment_id is not None and any(r[3] for r in rows):
        handled = frozenset({comment_id})
    return GuardHistory(
        last_started={r[0]: from_ms(r[1]) for r in rows},
        starts_today={r[0]: int(r[2] or 0) for r in rows},
        handled_comments=handled,
    )


async def contact_view(
    conn: aiosqlite.Connection,
    account_id: str,
    account_name: str,
    user_id: str | None,
    platform: Platform,
    handoff: bool,
) -> ContactView:
    if user_id is None:
        return ContactView(
            user_id=None, platform=platform, account_id=account_id, account_name=account_name
        )
    row = await fetch_one(
        conn,
        "SELECT username, name, tags, fields FROM contacts WHERE account_id = ? AND user_id = ?",
        (account_id, user_id),
    )
    username, name, tags, fields = row if row else (None, None, "[]", "{}")
    return ContactView(
        user_id=user_id,
        platform=platform,
        username=username,
        name=name,
        tags=frozenset(json.loads(tags)),
        fields=json.loads(fields),
        account_id=account_id,
        account_name=account_name,
        handoff=handoff,
    )


async def update_contact(
    conn: aiosqlite.Connection,
    account_id: str,
    user_id: str,
    *,
    add_tags: Iterable[str] = (),
    remove_tags: Iterable[str] = (),
    fields: Mapping[str, Any] | None = None,
) -> None:
    row = await fetch_one(
        conn,
        "SELECT tags, fields FROM contacts WHERE account_id = ? AND user_id = ?",
        (account_id, user_id),
    )
    if row is None:
        return
    tags = (set(json.loads(row[0])) | set(add_tags)) - set(remove_tags)
    merged = {**json.loads(row[1]), **(fields or {})}
    await conn.execute(
        "UPDATE contacts SET tags = ?, fields = ?, email = coalesce(?, email),"
        " phone = coalesce(?, phone) WHERE account_id = ? AND user_id = ?",
        (
            json.dumps(sorted(tags)),
            json.dumps(merged, ensure_ascii=False),
            merged.get("email"),
            merged.get("phone"),
            account_id,
            user_id,
        ),
    )


async def add_notes(
    conn: aiosqlite.Connection,
    account_id: str,
    user_id: str | None,
    flow_id: str | None,
    at: datetime,
    notes: Iterable[str],
) -> None:
    await conn.executemany(
        "INSERT INTO flow_notes (account_id, user_id, flow_id, at, note) VALUES (?, ?, ?, ?, ?)",
        [(account_id, user_id, flow_id, to_ms(at), n) for n in notes],
    )
