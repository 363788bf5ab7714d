"""The outbox (sends decided, not yet made) and the send log (what was sent or dropped, why).

Rows are claimed with a lease (`state='sending'`, `lease_owner`, `lease_until`), the shape
that becomes `FOR UPDATE SKIP LOCKED` on PostgreSQL. Each `SendClass` is a queue of its own
under its own cap. Messages are taken earliest deadline first (POLICY.md §4: a queued
message can lose its basis while it waits); public replies, which have no basis and so no
deadline, by due time.

Every hot query here is served by an index (migration 3); `EXPLAIN QUERY PLAN` shows none
of them scanning the table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import aiosqlite

from bot.clock import from_ms, to_ms
from bot.events import OptInKind
from bot.policy import Author, Content, Intent
from bot.store.db import fetch_all, fetch_one

__all__ = [
    "OutboxItem",
    "Outcome",
    "QueueOrder",
    "SendClass",
    "SendKind",
    "QueueStatus",
    "any_in_flight",
    "any_past_deadline",
    "claim_due",
    "echo_metadata",
    "enqueue",
    "finish",
    "intent_from_json",
    "in_flight",
    "intent_to_json",
    "kind_test",
    "log_send",
    "mark_sending",
    "next_due_at",
    "pending_past_deadline",
    "queue_status",
    "reconcile_echo",
    "release",
    "release_leases",
    "sends_since",
    "unclaim",
]


class SendKind(StrEnum):
    PRIVATE_REPLY = "private_reply"
    MESSAGE = "message"
    OPTIN_REQUEST = "optin_request"
    PUBLIC_REPLY = "public_reply"


class SendClass(StrEnum):
    """The sender's queues: each is claimed on its own, so none waits behind another's cap."""

    PRIVATE_REPLY = "private_reply"  # Meta's 750 private replies per hour (POLICY.md §4)
    DM = "dm"  # messages and opt-in requests: the 200 automated DMs per hour (POLICY.md §4)
    # Comments posted under the user's comment (POLICY.md §3), not messages: no basis, no
    # deadline, and no hourly cap in POLICY.md §4; only the calls-per-second cap holds them.
    PUBLIC_REPLY = "public_reply"

    @property
    def kinds(self) -> tuple[SendKind, ...]:
        return _CLASS_KINDS[self]


_CLASS_KINDS: dict[SendClass, tuple[SendKind, ...]] = {
    SendClass.PRIVATE_REPLY: (SendKind.PRIVATE_REPLY,),
    SendClass.DM: (SendKind.MESSAGE, SendKind.OPTIN_REQUEST),
    SendClass.PUBLIC_REPLY: (SendKind.PUBLIC_REPLY,),
}


def kind_test(send_class: SendClass) -> str:
    """The SQL condition on `kind` for the class: `kind IN (...)`, which the kind index serves."""
    return "kind IN (" + ", ".join(f"'{k.value}'" for k in send_class.kinds) + ")"


class Outcome(StrEnum):
    """A send-log row's verdict; `dropped` and `expired` carry the policy reason."""

    SENT = "sent"
    DROPPED = "dropped"  # the policy refused it (when queued or at the moment of sending)
    EXPIRED = "expired"  # its basis closed while it waited in the queue
    FAILED = "failed"  # Meta refused it and a retry would not help
    RETRYING = "retrying"  # a transient error; it stays queued
    UNKNOWN = "unknown"  # the request may have reached Meta; not resent (at-most-once)
    HELD = "held"  # the account is paused; it stays queued


class QueueOrder(StrEnum):
    """How `claim_due` picks among due rows when capacity is short."""

    EDF = "edf"  # earliest deadline first (the sender's order, POLICY.md §4)
    FIFO = "fifo"  # oldest row first: the baseline bench/burst.py compares against


_ORDER_BY = {
    QueueOrder.EDF: "coalesce(deadline, 9223372036854775807), priority, id",
    QueueOrder.FIFO: "id",
}
# Public replies have no basis, so no deadline: earliest deadline first is due order for them,
# which `outbox_pending_kind` gives without a sort.
_DUE_ORDER = "due_at, id"


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    account_id: str
    user_id: str | None
    comment_id: str | None
    kind: SendKind
    intent: Intent
    message: dict[str, Any]
    priority: int
    due_at: datetime
    deadline: datetime | None
    created_at: datetime
    attempts: int
    source: str | None


def intent_to_json(intent: Intent) -> str:
    return json.dumps(
        {
            "author": intent.author.value,
            "content": intent.content.value,
            "comment_id": intent.comment_id,
            "optin": intent.optin.value if intent.optin else None,
            "topic": intent.topic,
            "tag": intent.tag,
            "via_token": intent.via_token.value if intent.via_token else None,
            "handover": intent.handover,
        },
        separators=(",", ":"),
    )


def intent_from_json(text: str) -> Intent:
    d = json.loads(text)
    return Intent(
        author=Author(d["author"]),
        content=Content(d["content"]),
        comment_id=d.get("comment_id"),
        optin=OptInKind(d["optin"]) if d.get("optin") else None,
        topic=d.get("topic"),
        tag=d.get("tag"),
        via_token=OptInKind(d["via_token"]) if d.get("via_token") else None,
        handover=bool(d.get("handover", False)),
    )


async def enqueue(
    conn: aiosqlite.Connection,
    *,
    account_id: str,
    user_id: str | None,
    kind: SendKind,
    intent: Intent,
    message: dict[str, Any],
    due_at: datetime,
    deadline: datetime | None,
    now: datetime,
    priority: int = 0,
    source: str | None = None,
    once_key: str | None = None,
    comment_id: str | None = None,
) -> int | None:
    """Queue a send; None if `once_key` was queued before (a private reply is once per comment)."""
    cur = await conn.execute(
        "INSERT INTO outbox (account_id, user_id, comment_id, kind, intent, body, priority,"
        " due_at, deadline, created_at, source, once_key)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (once_key) DO NOTHING",
        (
            account_id,
            user_id,
            comment_id or intent.comment_id,
            kind.value,
            intent_to_json(intent),
            json.dumps(message, ensure_ascii=False, separators=(",", ":")),
            priority,
            to_ms(due_at),
            None if deadline is None else to_ms(deadline),
            to_ms(now),
            source,
            once_key,
        ),
    )
    return cur.lastrowid if cur.rowcount == 1 else None


_COLUMNS = (
    "id, account_id, user_id, comment_id, kind, intent, body, priority, due_at, deadline,"
    " created_at, attempts, source"
)


def _item(r: Any) -> OutboxItem:
    return OutboxItem(
        id=int(r[0]),
        account_id=r[1],
        user_id=r[2],
        comment_id=r[3],
        kind=SendKind(r[4]),
        intent=intent_from_json(r[5]),
        message=json.loads(r[6]),
        priority=int(r[7]),
        due_at=from_ms(r[8]),
        deadline=None if r[9] is None else from_ms(r[9]),
        created_at=from_ms(r[10]),
        attempts=int(r[11]),
        source=r[12],
    )


def _claim_key(order: QueueOrder, by_due: bool) -> Any:
    """The sort `claim_due`'s SQL applies, for the rows its fenced UPDATE returns."""
    if by_due:
        return lambda i: (i.due_at, i.id)
    if order is QueueOrder.FIFO:
        return lambda i: i.id
    return lambda i: (i.deadline or _NO_DEADLINE, i.priority, i.id)


_NO_DEADLINE = datetime.max.replace(tzinfo=UTC)  # no deadline sorts last, as in the SQL


async def claim_due(
    conn: aiosqlite.Connection,
    account_id: str,
    *,
    send_class: SendClass,
    now: datetime,
    limit: int,
    owner: str,
    lease_until: datetime,
    order: QueueOrder = QueueOrder.EDF,
) -> list[OutboxItem]:
    """Inside a transaction: lease up to `limit` due rows of the class, earliest deadline first.

    Ties go to the lower priority number (a reply to a user who just wrote before a
    follow-up), then to the older row. Public replies, which have no deadline, go in due
    order. `order=FIFO` takes the oldest rows (bench/burst.py's baseline).
    The lease is fenced: one UPDATE takes only rows still pending and not leased by anyone
    else, and returns exactly those (on PostgreSQL, `FOR UPDATE SKIP LOCKED` in the inner
    select), so two senders on one store never hold the same row.
    A lease is not an attempt: a row becomes 'sending' only just before its own Graph call
    (`mark_sending`), so a crash leaves at most that one in flight, and the rest of a leased
    batch simply goes back to the queue.
    """
    if limit <= 0:
        return []
    by_due = order is QueueOrder.EDF and send_class is SendClass.PUBLIC_REPLY
    order_by = _DUE_ORDER if by_due else _ORDER_BY[order]
    free = "state = 'pending' AND (lease_until IS NULL OR lease_until <= ?)"
    rows = await fetch_all(
        conn,
        f"UPDATE outbox SET lease_owner = ?, lease_until = ? WHERE {free} AND id IN"
        f" (SELECT id FROM outbox WHERE {free} AND account_id = ?"
        f" AND {kind_test(send_class)} AND due_at <= ? ORDER BY {order_by} LIMIT ?)"
        f" RETURNING {_COLUMNS}",
        (
            owner,
            to_ms(lease_until),
            to_ms(now),
            to_ms(now),
            account_id,
            to_ms(now),
            limit,
        ),
    )
    return sorted((_item(r) for r in rows), key=_claim_key(order, by_due))


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """What the sender reads of one class before claiming: its caps' counts, whether a row is
    due, and when the next one falls due."""

    in_second: int  # the account's sends since `second` (the calls-per-second cap is shared)
    oldest_in_second: datetime | None
    in_hour: int  # the class's sends since `hour` (0 when not asked: no hourly cap)
    oldest_in_hour: datetime | None
    due_now: bool  # `claim_due` would lease a row now
    next_due: datetime | None  # `next_due_at(after=now)`


async def queue_status(
    conn: aiosqlite.Connection,
    account_id: str,
    *,
    send_class: SendClass,
    now: datetime,
    second: datetime,
    hour: datetime | None,
) -> QueueStatus:
    """`sends_since` for both caps, whether `claim_due` has a row, and `next_due_at`, in one
    query: a tick runs this for every class, and most find nothing due, so they take no
    write lock and need no other read."""
    counted = "FROM send_log WHERE account_id = ? AND at > ? AND outcome IN ('sent', 'unknown')"
    in_hour = (
        "(SELECT 0 AS n, NULL AS oldest)"
        if hour is None
        else f"(SELECT count(*) AS n, min(at) AS oldest {counted} AND {kind_test(send_class)})"
    )
    row = await fetch_one(
        conn,
        "SELECT s.n, s.oldest, h.n, h.oldest, EXISTS (SELECT 1 FROM outbox"
        f" WHERE state = 'pending' AND account_id = ? AND {kind_test(send_class)}"
        " AND due_at <= ? AND (lease_until IS NULL OR lease_until <= ?)),"
        f" ({_next_due_sql(send_class)})"
        f" FROM (SELECT count(*) AS n, min(at) AS oldest {counted}) AS s, {in_hour} AS h",
        (
            account_id,
            to_ms(now),
            to_ms(now),
            *_next_due_args(account_id, send_class, now),
            account_id,
            to_ms(second),
            *(() if hour is None else (account_id, to_ms(hour))),
        ),
    )
    assert row is not None
    return QueueStatus(
        in_second=int(row[0]),
        oldest_in_second=None if row[1] is None else from_ms(row[1]),
        in_hour=int(row[2]),
        oldest_in_hour=None if row[3] is None else from_ms(row[3]),
        due_now=bool(row[4]),
        next_due=None if row[5] is None else from_ms(row[5]),
    )


async def mark_sending(
    conn: aiosqlite.Connection, item_id: int, owner: str, now: datetime, lease_until: datetime
) -> bool:
    """The Graph call for this row is about to leave: from here its outcome may be unknown.

    Fenced: only a row still pending and leased by `owner` until after `now`. False means
    the lease ran out (a slow batch) or another sender holds the row: it must not be sent.
    The lease is renewed to `lease_until` for the call: only a call its sender abandoned
    (a crash) outlives it, and such a row is settled as in flight at a restart.
    """
    cur = await conn.execute(
        "UPDATE outbox SET state = 'sending', attempts = attempts + 1, lease_until = ?"
        " WHERE id = ? AND state = 'pending' AND lease_owner = ? AND lease_until > ?",
        (to_ms(lease_until), item_id, owner, to_ms(now)),
    )
    return cur.rowcount == 1


def _fence(owner: str | None) -> tuple[str, tuple[Any, ...]]:
    """The condition that a row is still this sender's to settle (no owner: anyone's)."""
    return ("", ()) if owner is None else (" AND lease_owner = ?", (owner,))


async def release(
    conn: aiosqlite.Connection,
    item_id: int,
    *,
    due_at: datetime,
    deadline: datetime | None = None,
    owner: str | None = None,
) -> bool:
    """Back to the queue (a retry later, or the account is paused); False if not ours."""
    cond, args = _fence(owner)
    cur = await conn.execute(
        "UPDATE outbox SET state = 'pending', lease_owner = NULL, lease_until = NULL,"
        f" due_at = ?, deadline = coalesce(?, deadline) WHERE id = ?{cond}",
        (to_ms(due_at), None if deadline is None else to_ms(deadline), item_id, *args),
    )
    return cur.rowcount == 1


async def release_leases(conn: aiosqlite.Connection) -> None:
    """At start-up: rows leased but never tried go back to the queue as they were."""
    await conn.execute(
        "UPDATE outbox SET lease_owner = NULL, lease_until = NULL"
        " WHERE state = 'pending' AND lease_owner IS NOT NULL"
    )


async def unclaim(conn: aiosqlite.Connection, item_ids: list[int], owner: str) -> None:
    """Give rows this sender leased back untried."""
    await conn.executemany(
        "UPDATE outbox SET lease_owner = NULL, lease_until = NULL"
        " WHERE id = ? AND state = 'pending' AND lease_owner = ?",
        [(i, owner) for i in item_ids],
    )


async def finish(
    conn: aiosqlite.Connection, item_id: int, state: str, owner: str | None = None
) -> bool:
    """`sent`, `dropped` or `unknown`: the row leaves the queue for good; False if `owner`
    no longer holds it (another sender settled it meanwhile)."""
    cond, args = _fence(owner)
    cur = await conn.execute(
        "UPDATE outbox SET state = ?, lease_owner = NULL, lease_until = NULL"
        f" WHERE id = ? AND state IN ('pending', 'sending'){cond}",
        (state, item_id, *args),
    )
    return cur.rowcount == 1


async def log_send(
    conn: aiosqlite.Connection,
    *,
    at: datetime,
    outcome: Outcome,
    account_id: str,
    user_id: str | None,
    kind: SendKind | None,
    outbox_id: int | None = None,
    comment_id: str | None = None,
    basis: str | None = None,
    reason: str | None = None,
    detail: str | None = None,
    message_id: str | None = None,
    error_code: int | None = None,
    error_subcode: int | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO send_log (outbox_id, account_id, user_id, comment_id, at, outcome, kind,"
        " basis, reason, detail, message_id, error_code, error_subcode)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            outbox_id,
            account_id,
            user_id,
            comment_id,
            to_ms(at),
            outcome.value,
            kind.value if kind else None,
            basis,
            reason,
            detail,
            message_id,
            error_code,
            error_subcode,
        ),
    )


async def sends_since(
    conn: aiosqlite.Connection,
    account_id: str,
    *,
    send_class: SendClass | None,
    since: datetime,
) -> tuple[int, datetime | None]:
    """Sends counted against a cap since `since` (possibly sent count too), and the oldest.

    `send_class=None` counts every class: the calls-per-second cap is the account's, shared.
    """
    kinds = "" if send_class is None else f" AND {kind_test(send_class)}"
    row = await fetch_one(
        conn,
        "SELECT count(*), min(at) FROM send_log WHERE account_id = ? AND at > ?"
        f" AND outcome IN ('sent', 'unknown'){kinds}",
        (account_id, to_ms(since)),
    )
    assert row is not None
    return int(row[0]), None if row[1] is None else from_ms(row[1])


_RECONCILED = "the outcome was unknown; Meta's echo shows it was delivered"
METADATA_PREFIX = "bot:outbox:"


def echo_metadata(item_id: int) -> str:
    """The `metadata` a send carries, which Meta hands back on its echo (Messenger)."""
    return f"{METADATA_PREFIX}{item_id}"


async def reconcile_echo(
    conn: aiosqlite.Connection,
    account_id: str,
    user_id: str,
    mid: str,
    metadata: str | None,
    at: datetime,
) -> int | None:
    """An echo of a send whose outcome was unknown proves it went: settle it as sent.

    By ids only, never by text (a person typing "Thanks!" in the app is not the bot's own
    pending "Thanks!"): an echo whose mid a settled send already has is that send; one whose
    `metadata` names an outbox row of this contact settles that row. Returns the id settled.
    """
    if await fetch_one(
        conn,
        "SELECT 1 FROM send_log WHERE account_id = ? AND message_id = ? LIMIT 1",
        (account_id, mid),
    ):
        return None
    if not metadata or not metadata.startswith(METADATA_PREFIX):
        return None
    try:
        item_id = int(metadata[len(METADATA_PREFIX) :])
    except ValueError:
        return None
    row = await fetch_one(
        conn,
        "SELECT kind, comment_id FROM outbox WHERE id = ? AND account_id = ? AND user_id = ?"
        " AND (state = 'unknown' OR (state = 'pending' AND attempts > 0))",
        (item_id, account_id, user_id),
    )
    if row is None:
        return None
    kind, comment_id = row
    await conn.execute(
        "UPDATE outbox SET state = 'sent', lease_owner = NULL, lease_until = NULL WHERE id = ?",
        (item_id,),
    )
    # One send, one log row: the 'unknown' entry becomes 'sent' (the caps count it once).
    cur = await conn.execute(
        "UPDATE send_log SET outcome = 'sent', reason = 'reconciled_by_echo',"
        " detail = ?, message_id = ? WHERE outbox_id = ? AND outcome = 'unknown'",
        (_RECONCILED, mid, item_id),
    )
    if not cur.rowcount:
        await log_send(
            conn,
            at=at,
            outcome=Outcome.SENT,
            account_id=account_id,
            user_id=user_id,
            kind=SendKind(kind),
            outbox_id=item_id,
            comment_id=comment_id,
            reason="reconciled_by_echo",
            detail=_RECONCILED,
            message_id=mid,
        )
    return item_id


async def in_flight(
    conn: aiosqlite.Connection, lease_ended_by: datetime | None = None
) -> list[OutboxItem]:
    """Rows whose Graph call had left when the daemon stopped; with `lease_ended_by`, only
    those whose lease ran out by then (their sender is gone: a crash, another daemon)."""
    if lease_ended_by is None:
        rows = await fetch_all(conn, f"SELECT {_COLUMNS} FROM outbox WHERE state = 'sending'")
    else:
        rows = await fetch_all(
            conn,
            f"SELECT {_COLUMNS} FROM outbox WHERE state = 'sending'"
            " AND (lease_until IS NULL OR lease_until <= ?)",
            (to_ms(lease_ended_by),),
        )
    return [_item(r) for r in rows]


async def any_in_flight(conn: aiosqlite.Connection, lease_ended_by: datetime) -> bool:
    """Whether `in_flight(lease_ended_by=...)` has a row: one read, most ticks."""
    row = await fetch_one(
        conn,
        "SELECT 1 FROM outbox WHERE state = 'sending'"
        " AND (lease_until IS NULL OR lease_until <= ?) LIMIT 1",
        (to_ms(lease_ended_by),),
    )
    return row is not None


async def pending_past_deadline(
    conn: aiosqlite.Connection, now: datetime, limit: int = 500
) -> list[OutboxItem]:
    return [
        _item(r)
        for r in await fetch_all(
            conn,
            f"SELECT {_COLUMNS} FROM outbox WHERE state = 'pending' AND deadline IS NOT NULL"
            " AND deadline <= ? ORDER BY deadline LIMIT ?",
            (to_ms(now), limit),
        )
    ]


async def any_past_deadline(conn: aiosqlite.Connection, now: datetime) -> bool:
    """Whether `pending_past_deadline` has a row: one read instead of a write transaction."""
    row = await fetch_one(
        conn,
        "SELECT 1 FROM outbox WHERE state = 'pending' AND deadline IS NOT NULL"
        " AND deadline <= ? LIMIT 1",
        (to_ms(now),),
    )
    return row is not None


async def next_due_at(
    conn: aiosqlite.Connection, account_id: str, *, send_class: SendClass, after: datetime
) -> datetime | None:
    """When the account's next queued row in that class falls due (after `after`)."""
    row = await fetch_one(
        conn, _next_due_sql(send_class), _next_due_args(account_id, send_class, after)
    )
    return None if row is None or row[0] is None else from_ms(row[0])


def _next_due_sql(send_class: SendClass) -> str:
    """One min() per kind: each is a single lookup in `outbox_pending_kind`, where a min() over
    `kind IN (...)` would read every later row of the class."""
    per_kind = " UNION ALL ".join(
        "SELECT min(due_at) AS due FROM outbox WHERE state = 'pending' AND account_id = ?"
        " AND kind = ? AND due_at > ?"
        for _ in send_class.kinds
    )
    return f"SELECT min(due) FROM ({per_kind})"


def _next_due_args(account_id: str, send_class: SendClass, after: datetime) -> list[Any]:
    return [a for k in send_class.kinds for a in (account_id, k.value, to_ms(after))]
