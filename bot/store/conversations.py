"""Contacts and their conversation state: the policy core's input, kept in SQLite.

The policy core works on one immutable `ConversationState` per (account, user); it is stored
in the core's own JSON form, so the store never has to follow the core's fields one by one.
Comments whose author Meta left out (POLICY.md §2) have no contact; their private-reply basis
is kept on the comment row.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime

import aiosqlite

from bot.clock import from_ms, to_ms
from bot.events import Comment, Platform
from bot.policy import CommentBasis, ConversationState, from_dict, to_dict
from bot.store.db import fetch_all, fetch_one

__all__ = [
    "ContactKey",
    "load_comment",
    "load_state",
    "load_states",
    "mark_comment_replied",
    "record_comments",
    "save_state",
    "save_states",
    "upsert_contacts",
]


def _ms(t: datetime | None) -> int | None:
    return None if t is None else to_ms(t)


ContactKey = tuple[str, str]  # (account_id, user_id)


async def upsert_contacts(
    conn: aiosqlite.Connection, rows: Sequence[tuple[str, str, datetime, str | None]]
) -> None:
    """(account_id, user_id, seen_at, username) for each contact an event named."""
    await conn.executemany(
        "INSERT INTO contacts (account_id, user_id, username, first_seen_at, last_seen_at)"
        " VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (account_id, user_id) DO UPDATE SET"
        " username = coalesce(excluded.username, username),"
        " first_seen_at = min(first_seen_at, excluded.first_seen_at),"
        " last_seen_at = max(last_seen_at, excluded.last_seen_at)",
        [(a, u, username, to_ms(at), to_ms(at)) for a, u, at, username in rows],
    )


async def load_states(
    conn: aiosqlite.Connection, keys: Sequence[ContactKey], platforms: dict[str, Platform]
) -> dict[ContactKey, ConversationState]:
    """The states of many contacts in one query; a contact never seen gets an empty state."""
    out = {k: ConversationState(platform=platforms[k[0]]) for k in keys}
    for chunk in _chunks(list(out), 400):
        values = ",".join("(?, ?)" for _ in chunk)
        # The keys drive the join, one primary-key lookup each: `(account_id, user_id) IN
        # (VALUES ...)` of two or more keys scanned the whole table, every batch.
        for account_id, user_id, state in await fetch_all(
            conn,
            f"SELECT c.account_id, c.user_id, c.state FROM (VALUES {values}) AS k"
            " CROSS JOIN conversations AS c ON c.account_id = k.column1 AND c.user_id = k.column2",
            [x for k in chunk for x in k],
        ):
            out[(account_id, user_id)] = from_dict(json.loads(state))
    return out


async def load_state(
    conn: aiosqlite.Connection, account_id: str, user_id: str, platform: Platform
) -> ConversationState:
    key = (account_id, user_id)
    return (await load_states(conn, [key], {account_id: platform}))[key]


async def save_states(
    conn: aiosqlite.Connection,
    states: dict[ContactKey, ConversationState],
    now: datetime,
) -> None:
    if not states:
        return
    await conn.executemany(
        "INSERT INTO conversations (account_id, user_id, platform, state, last_user_message_at,"
        " updated_at) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (account_id, user_id) DO UPDATE SET state = excluded.state,"
        " last_user_message_at = excluded.last_user_message_at,"
        " updated_at = excluded.updated_at",
        [
            (
                a,
                u,
                st.platform.value,
                json.dumps(to_dict(st), separators=(",", ":")),
                _ms(st.last_user_message_at),
                to_ms(now),
            )
            for (a, u), st in states.items()
        ],
    )
    await conn.executemany(
        "DELETE FROM optin_tokens WHERE account_id = ? AND user_id = ?", list(states)
    )
    await conn.executemany(
        "INSERT OR REPLACE INTO optin_tokens (account_id, token, user_id, kind, topic,"
        " frequency, expires_at, stopped, used_at, last_sent_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                a,
                t.token,
                u,
                t.kind.value,
                t.topic,
                t.frequency,
                _ms(t.expires_at),
                int(t.stopped),
                _ms(t.used_at),
                _ms(t.last_sent_at),
            )
            for (a, u), st in states.items()
            for t in st.tokens
        ],
    )


async def save_state(
    conn: aiosqlite.Connection,
    account_id: str,
    user_id: str,
    state: ConversationState,
    now: datetime,
) -> None:
    await save_states(conn, {(account_id, user_id): state}, now)


async def record_comments(conn: aiosqlite.Connection, events: Sequence[Comment]) -> None:
    """Keep each comment's text and media (flows match on them), with or without its author."""
    await conn.executemany(
        "INSERT INTO comments (account_id, comment_id, user_id, media_id, parent_id, text,"
        " live, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (account_id, comment_id) DO UPDATE SET"
        " user_id = coalesce(user_id, excluded.user_id),"
        " media_id = coalesce(media_id, excluded.media_id),"
        " parent_id = coalesce(parent_id, excluded.parent_id),"
        " text = excluded.text",
        [
            (
                e.account_id,
                e.comment_id,
                e.user_id,
                e.media_id or e.post_id,
                e.parent_id,
                e.text,
                int(e.live),
                to_ms(e.timestamp),
            )
            for e in events
        ],
    )


def _chunks(items: list[ContactKey], size: int) -> Iterator[list[ContactKey]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


async def load_comment(
    conn: aiosqlite.Connection, account_id: str, comment_id: str
) -> CommentBasis | None:
    """The private-reply basis of a comment as the comments table knows it."""
    r = await fetch_one(
        conn,
        "SELECT created_at, live, private_reply_at FROM comments"
        " WHERE account_id = ? AND comment_id = ?",
        (account_id, comment_id),
    )
    if r is None:
        return None
    return CommentBasis(
        comment_id=comment_id,
        created_at=from_ms(r[0]),
        live=bool(r[1]),
        private_reply_at=None if r[2] is None else from_ms(r[2]),
    )


async def mark_comment_replied(
    conn: aiosqlite.Connection, account_id: str, comment_id: str, at: datetime
) -> None:
    await conn.execute(
        "UPDATE comments SET private_reply_at = coalesce(private_reply_at, ?)"
        " WHERE account_id = ? AND comment_id = ?",
        (to_ms(at), account_id, comment_id),
    )
