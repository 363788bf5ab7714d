"""`bot status`: what the store says, per account, without asking the running daemon."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from bot.clock import Clock, SystemClock, from_ms, to_ms
from bot.config import Config
from bot.policy import PolicyProfile
from bot.sender import hourly_cap
from bot.store.accounts import load_hold
from bot.store.db import Database
from bot.store.files import open_store
from bot.store.inbox import inbox_counts
from bot.store.outbox import SendClass, kind_test, sends_since

__all__ = ["CLASSES", "collect_status", "print_status"]

# Per-account figures, one entry per sender queue (bot/sender.py); `cap_per_hour` is null
# for public replies, which no hourly cap holds (POLICY.md §4).
CLASSES = (
    ("private_replies", SendClass.PRIVATE_REPLY),
    ("dms", SendClass.DM),
    ("public_replies", SendClass.PUBLIC_REPLY),
)


async def _projection(
    db: Database,
    account_id: str,
    *,
    send_class: SendClass,
    cap: int | None,
    sent: int,
    now_ms: int,
) -> dict[str, Any]:
    """Queue depth and how many queued messages would expire before the caps let them go.

    A projection: the queue drains earliest deadline first at the cap's pace (the free part
    of the rolling hour at once, then one slot every hour/cap), with nothing new arriving.
    A class without an hourly cap (public replies) drains as it falls due.
    """
    async with db.reader.execute(
        f"SELECT deadline, due_at FROM outbox WHERE account_id = ? AND state = 'pending'"
        f" AND {kind_test(send_class)}"
        " ORDER BY coalesce(deadline, 9223372036854775807), priority, id",
        (account_id,),
    ) as cur:
        rows = list(await cur.fetchall())
    room = len(rows) if cap is None else max(cap - sent, 0)
    slot_ms = 3_600_000 / max(cap or 1, 1)
    expiring = 0
    first_expiry: int | None = None
    for i, (deadline, due_at) in enumerate(rows):
        at = max(due_at, now_ms if i < room else now_ms + (i - room + 1) * slot_ms)
        if deadline is not None and at > deadline:
            expiring += 1
            first_expiry = deadline if first_expiry is None else min(first_expiry, deadline)
    return {
        "queued": len(rows),
        "sent_last_hour": sent,
        "cap_per_hour": cap,
        "projected_expiries": expiring,
        "first_projected_expiry": None
        if first_expiry is None
        else from_ms(first_expiry).isoformat(),
    }


async def collect_status(
    config: Config,
    db: Database,
    clock: Clock,
    profile: PolicyProfile | None = None,
    inbox: Database | None = None,
) -> dict[str, Any]:
    """`inbox`: the inbox file's database; without it, the inbox line is left out."""
    profile = profile or PolicyProfile()
    now = clock.now()
    window_open_since = to_ms(now - timedelta(hours=24))
    out: dict[str, Any] = {"now": now.isoformat(), "accounts": []}
    if inbox is not None:
        out["inbox"] = await inbox_counts(inbox)
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
        }
        for key, (sql, args) in queries.items():
            async with db.reader.execute(sql, (account.id, *args)) as cur:
                row = await cur.fetchone()
            one[key] = int(row[0]) if row else 0
        held = await load_hold(db.reader, account.id)
        one["paused"] = None
        if held is not None and held.holds(now):
            until = "" if held.until is None else f" until {held.until:%Y-%m-%d %H:%M:%S} UTC"
            one["paused"] = f"{held.reason}{until}"
        rules = profile.for_platform(account.platform)
        for label, send_class in CLASSES:
            sent, _ = await sends_since(
                db.reader, account.id, send_class=send_class, since=now - timedelta(hours=1)
            )
            one[label] = await _projection(
                db,
                account.id,
                send_class=send_class,
                cap=hourly_cap(rules, send_class),
                sent=sent,
                now_ms=to_ms(now),
            )
        async with db.reader.execute(
            "SELECT min(t) FROM (SELECT min(due_at) AS t FROM outbox WHERE account_id = ?"
            " AND state = 'pending' UNION ALL SELECT min(due_at) FROM flow_runs"
            " WHERE account_id = ? AND due_at IS NOT NULL)",
            (account.id, account.id),
        ) as cur:
            row = await cur.fetchone()
        one["next_due"] = from_ms(row[0]).isoformat() if row and row[0] is not None else None
        async with db.reader.execute(
            "SELECT outcome, count(*) FROM send_log WHERE account_id = ? AND at > ?"
            " AND outcome NOT IN ('sent', 'retrying') GROUP BY outcome",
            (account.id, to_ms(now - timedelta(hours=24))),
        ) as cur:
            one["not_sent_last_24h"] = {str(r[0]): int(r[1]) for r in await cur.fetchall()}
        out["accounts"].append(one)
    return out


async def print_status(config: Config, *, as_json: bool, clock: Clock | None = None) -> int:
    from bot.policy import load_profile

    profile = load_profile(config.policy_profile) if config.policy_profile else PolicyProfile()
    clock = clock or SystemClock()
    # Checked as `bot run` checks them: damaged or mismatched files are refused, not shown.
    db, inbox = await open_store(config.database.path, config.database.synchronous, clock=clock)
    try:
        status = await collect_status(config, db, clock, profile, inbox)
    finally:
        await inbox.close()
        await db.close()
    if as_json:
        print(json.dumps(status, indent=2))
        return 0
    inbox = status["inbox"]
    print(f"inbox: {inbox['new']} waiting, {inbox['done']} processed, {inbox['bad']} bad")
    for a in status["accounts"]:
        paused = f"PAUSED: {a['paused']}" if a["paused"] else "running"
        queued = sum(a[label]["queued"] for label, _ in CLASSES)
        sent = sum(a[label]["sent_last_hour"] for label, _ in CLASSES)
        print(
            f"{a['platform']} {a['id']} {a['name']}: {paused}; {a['contacts']} contacts,"
            f" {a['open_windows']} open 24 h windows, {queued} queued,"
            f" {sent} sent in the last hour"
        )
        for label, _ in CLASSES:
            q = a[label]
            cap = "" if q["cap_per_hour"] is None else f"/{q['cap_per_hour']}"
            line = (
                f"  {label.replace('_', ' ')}: {q['sent_last_hour']}{cap} in the"
                f" last hour, {q['queued']} queued"
            )
            if q["projected_expiries"]:
                line += (
                    f"; WARNING {q['projected_expiries']} projected to expire before the cap"
                    f" lets them go (first at {q['first_projected_expiry']})"
                )
            print(line)
        if a["next_due"]:
            print(f"  next due: {a['next_due']}")
        if a["not_sent_last_24h"]:
            why = ", ".join(f"{n} {k}" for k, n in sorted(a["not_sent_last_24h"].items()))
            print(f"  not sent in the last 24 h: {why}")
    return 0
