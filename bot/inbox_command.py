"""`bot inbox`: what was set aside, and `bot inbox replay` to process it again.

Two things can be set aside, each with its reason, never dropped: a delivery that is not a
webhook at all (its body kept as received), and one event the engine could not apply (the
other events of its delivery went on). Both are safe to replay while the daemon runs: the
worker picks them up within its poll, and what was applied before stays a duplicate.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

from bot.clock import SystemClock, from_ms
from bot.config import Config
from bot.store.db import Database
from bot.store.events import replay_set_aside, set_aside_events
from bot.store.files import open_store
from bot.store.inbox import bad_deliveries, replay_deliveries

__all__ = ["add_inbox_parser", "inbox_command"]


def add_inbox_parser(sub: Any) -> None:
    ib = sub.add_parser("inbox", help="list what was set aside; `replay` processes it again")
    ib.add_argument("--json", action="store_true", help="machine-readable output")
    ib_sub = ib.add_subparsers(dest="inbox_command")
    rp = ib_sub.add_parser("replay", help="process set-aside events or deliveries again")
    rp.add_argument("--event", type=int, action="append", default=[], metavar="ID")
    rp.add_argument("--delivery", type=int, action="append", default=[], metavar="ID")
    rp.add_argument("--all", action="store_true", help="everything set aside")


async def inbox_command(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    db, inbox = await open_store(
        config.database.path, config.database.synchronous, clock=SystemClock()
    )
    try:
        if getattr(args, "inbox_command", None) == "replay":
            return await _replay(args, db, inbox, out)
        return await _list(args, db, inbox, out)
    finally:
        await inbox.close()
        await db.close()


async def _list(args: argparse.Namespace, db: Database, inbox: Database, out: TextIO) -> int:
    events = await set_aside_events(db.reader)
    deliveries = await bad_deliveries(inbox)
    if args.json:
        out.write(
            json.dumps(
                {
                    "events": [
                        {
                            "id": e.id,
                            "delivery": e.inbox_id,
                            "account": e.account_id,
                            "user": e.user_id,
                            "kind": e.kind,
                            "at": e.at.isoformat(),
                            "reason": e.error,
                        }
                        for e in events
                    ],
                    "deliveries": [
                        {
                            "id": d.id,
                            "received_at": from_ms(d.received_at).isoformat(),
                            "bytes": d.size,
                            "reason": d.error,
                        }
                        for d in deliveries
                    ],
                },
                indent=2,
            )
            + "\n"
        )
        return 0
    if not events and not deliveries:
        out.write("nothing set aside: every stored delivery and event was processed\n")
        return 0
    for e in events:
        out.write(
            f"event {e.id} (delivery {e.inbox_id}, {e.kind}, account {e.account_id}, "
            f"user {e.user_id or '-'}, {e.at:%Y-%m-%d %H:%M:%S} UTC): {e.error}\n"
        )
    for d in deliveries:
        out.write(
            f"delivery {d.id} ({d.size} bytes, received "
            f"{from_ms(d.received_at):%Y-%m-%d %H:%M:%S} UTC): {d.error}\n"
        )
    out.write(
        f"{len(events)} events and {len(deliveries)} deliveries set aside; "
        "`bot inbox replay --all` processes them again\n"
    )
    return 0


async def _replay(args: argparse.Namespace, db: Database, inbox: Database, out: TextIO) -> int:
    if not (args.all or args.event or args.delivery):
        out.write("say what to replay: --event ID, --delivery ID (each may repeat) or --all\n")
        return 2
    async with db.transaction() as conn:
        events = await replay_set_aside(conn, None if args.all else args.event)
    deliveries = await replay_deliveries(inbox, None if args.all else args.delivery)
    out.write(
        f"queued again: {events} events, {deliveries} deliveries; the daemon processes "
        "them within a second (or at its next start)\n"
    )
    return 0
