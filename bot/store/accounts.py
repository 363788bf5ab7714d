"""Per-account state that outlives a restart: a pause (an operator must act) or a throttle
(Meta said wait until then), both in `account_state`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiosqlite

from bot.clock import from_ms, to_ms
from bot.store.db import fetch_all, fetch_one

__all__ = ["AccountHold", "account_holds", "hold", "lift", "load_hold"]


@dataclass(frozen=True, slots=True)
class AccountHold:
    """Why an account sends nothing now; `until` None: until an operator resumes it."""

    reason: str
    since: datetime
    until: datetime | None

    def holds(self, now: datetime) -> bool:
        return self.until is None or self.until > now


async def hold(
    conn: aiosqlite.Connection,
    account_ids: list[str],
    reason: str,
    now: datetime,
    until: datetime | None,
) -> None:
    """Pause (`until` None) or throttle the accounts. A throttle never shortens a pause."""
    await conn.executemany(
        "INSERT INTO account_state (account_id, paused_reason, paused_at, paused_until)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (account_id) DO UPDATE SET"
        " paused_reason = excluded.paused_reason, paused_at = excluded.paused_at,"
        " paused_until = excluded.paused_until"
        " WHERE account_state.paused_reason IS NULL OR excluded.paused_until IS NULL"
        " OR (account_state.paused_until IS NOT NULL"
        " AND account_state.paused_until < excluded.paused_until)",
        [(a, reason, to_ms(now), None if until is None else to_ms(until)) for a in account_ids],
    )


async def load_hold(conn: aiosqlite.Connection, account_id: str) -> AccountHold | None:
    row = await fetch_one(
        conn,
        "SELECT paused_reason, paused_at, paused_until FROM account_state"
        " WHERE account_id = ? AND paused_reason IS NOT NULL",
        (account_id,),
    )
    return None if row is None else _hold(*row)


async def account_holds(conn: aiosqlite.Connection) -> dict[str, AccountHold]:
    rows = await fetch_all(
        conn,
        "SELECT account_id, paused_reason, paused_at, paused_until FROM account_state"
        " WHERE paused_reason IS NOT NULL",
    )
    return {r[0]: _hold(r[1], r[2], r[3]) for r in rows}


async def lift(conn: aiosqlite.Connection, account_id: str) -> str | None:
    """Lift a pause or throttle; the reason it had, if any."""
    row = await fetch_one(
        conn, "SELECT paused_reason FROM account_state WHERE account_id = ?", (account_id,)
    )
    await conn.execute(
        "UPDATE account_state SET paused_reason = NULL, paused_at = NULL,"
        " paused_until = NULL WHERE account_id = ?",
        (account_id,),
    )
    return str(row[0]) if row and row[0] else None


def _hold(reason: Any, since: Any, until: Any) -> AccountHold:
    return AccountHold(
        reason=str(reason),
        since=from_ms(int(since or 0)),
        until=None if until is None else from_ms(int(until)),
    )
