"""`bot status`: what the store says, per account, without asking the running daemon."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from bot.clock import Clock, SystemClock, to_ms
from bot.config import Config
from bot.store.db import Database
from bot.store.inbox import inbox_counts

__all__ = ["collect_status", "print_status"]


async def collect_status(config: Config, db: Database, clock: Clock) -> dict[str, Any]:
    now = clock.now()
    hour_ago = to_ms(now - timedelta(hours=1))
    window_open_since = to_ms(now - timedelta(hours=24))
    out: dict[str, Any] = {"now": now.isoformat(), "inbox": await inbox_counts(db), "accounts": []}
    for account in config.accounts:
        one: dict[str, Any] = {
            "id": account.id,
            "platform": account.platform.value,
            "name": account.name,
        }
        queries = {
            "contacts": ("SELECT count(*) FROM contacts WHERE account_id = ?", ()),
            "open_windows": (
                "SELECT count(*) FROM conversations WHERE account_id = ?"
                " AND last_user_message_at > ?",
                (window_open_since,),
            ),
            "queued": (
                "SELECT count(*) FROM outbox WHERE account_id = ? AND state = 'pending'",
                (),
            ),
            "sent_last_hour": (
                "SELECT count(*) FROM send_log WHERE account_id = ? AND outcome = 'sent'"
                " AND at > ?",
                (hour_ago,),
            ),
        }
        for key, (sql, args) in queries.items():
            async with db.reader.execute(sql, (account.id, *args)) as cur:
                row = await cur.fetchone()
            one[key] = int(row[0]) if row else 0
        async with db.reader.execute(
            "SELECT paused_reason FROM account_state WHERE account_id = ?", (account.id,)
        ) as cur:
            row = await cur.fetchone()
        one["paused"] = row[0] if row and row[0] else None
        out["accounts"].append(one)
    return out


async def print_status(config: Config, *, as_json: bool, clock: Clock | None = None) -> int:
    db = await Database.open(config.database.path, config.database.synchronous)
    try:
        status = await collect_status(config, db, clock or SystemClock())
    finally:
        await db.close()
    if as_json:
        print(json.dumps(status, indent=2))
        return 0
    inbox = status["inbox"]
    print(f"inbox: {inbox['new']} waiting, {inbox['done']} processed, {inbox['bad']} bad")
    for a in status["accounts"]:
        paused = f"PAUSED: {a['paused']}" if a["paused"] else "running"
        print(
            f"{a['platform']} {a['id']} {a['name']}: {paused}; {a['contacts']} contacts,"
            f" {a['open_windows']} open 24 h windows, {a['queued']} queued,"
            f" {a['sent_last_hour']} sent in the last hour"
        )
    return 0
