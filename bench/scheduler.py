"""A million pending follow-ups: memory, restart time and lateness of the real daemon.

Issue 4's targets: resident memory < 300 MB, restart to ready < 10 s, p99 lateness of a due
follow-up < 1 s. The store is filled directly in SQLite, in bulk: by default 1,000,000 pricing
runs waiting for their 3-day nudge (`flow_runs` with due times spread over the next 30 days),
each with its contact and conversation, and optionally pending outbox rows due later
(`--outbox`). Then the real daemon (`python -m bot --config ... run`, SystemClock, APScheduler)
serves it, sending to the Graph API simulator that runs in this process on loopback:

- restart: seconds from spawn to the ready line (database open, migrations, recover), and to
  the simulator's first accepted send of a follow-up that was already overdue (the first
  dispatcher tick done); measured at the first start and again after a SIGKILL;
- lateness: `--due` follow-ups fall due evenly over `--window` real seconds, each to a contact
  with an open window; per follow-up, when it fired (its outbox row's creation) and when the
  simulator accepted its send, against its due time;
- memory: the daemon's VmRSS, sampled every half second, and its VmHWM (peak) at the end.

Caps are lifted in a policy profile for this run (the cap would otherwise decide when a
nudge goes, not the scheduler). Everything is real time: the machine is shared and noisy.

    python bench/scheduler.py                       # 1,000,000 runs, 3,000 due over 60 s
    python bench/scheduler.py --runs 100000 --due 500 --window 20
    python bench/scheduler.py --outbox 200000       # plus queued sends due later
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import (
    IG_ACCOUNT,
    IG_TOKEN,
    SECRET,
    Daemon,
    bot_settings,
    free_port,
    rss_mb,
    write_settings,
)
from aiohttp import web

from bot.clock import SystemClock, to_ms
from bot.config import config_from_mapping
from bot.events import Platform
from bot.flows.run import RunState, Waiting
from bot.metrics import Metrics
from bot.policy import ConversationState, PolicyProfile
from bot.policy.serialize import to_dict
from bot.sender import Sender
from bot.simulator import Simulator, SimulatorRules, create_simulator_app
from bot.store import flows as runs
from bot.store import outbox
from bot.store.db import Database
from bot.store.outbox import SendClass

# Ids of the contacts each run adds, clear of the bulk ones and of earlier runs (--reuse).
RUN_BASE = 10_000_000 + (int(time.time()) % 10_000) * 10_000_000
TARGET_RSS_MB = 300.0
TARGET_READY_S = 10.0
TARGET_P99_S = 1.0
NO_CAPS = """\
instagram:
  automated_dms_per_hour: 100000000
  private_replies_per_hour: 100000000
  calls_per_second: 100000
"""


def user_id(i: int) -> str:
    return str(17_000_000_000_000_000 + i)


def run_json(due: datetime, started: datetime) -> str:
    """A pricing run waiting for its nudge, as the engine saves it (bot/store/flows.py)."""
    run = RunState(
        flow_id="pricing",
        step_id="nudge",
        started_at=started,
        waiting_for=Waiting.FOLLOWUP,
        wait_until=due,
        answers={"question": "how much for a team of 5?"},
        trigger={"kind": "comment", "comment_id": "17800000000000000", "text": "PRICING"},
        replied=True,
        last_text="how much for a team of 5?",
    )
    return json.dumps(run.to_dict(), separators=(",", ":"))


def state_json(last_message: datetime) -> str:
    state = ConversationState(platform=Platform.INSTAGRAM, last_user_message_at=last_message)
    return json.dumps(to_dict(state), separators=(",", ":"))


@dataclass
class Store:
    """What was put in the database, for the checks afterwards."""

    path: Path
    runs: int
    outbox: int
    due: dict[str, datetime] = field(default_factory=dict)  # user -> due, measured set
    overdue: list[list[str]] = field(default_factory=list)  # users per restart
    load_seconds: float = 0.0
    size_mb: float = 0.0


def create_schema(path: Path) -> None:
    async def go() -> None:
        db = await Database.open(path)
        await db.close()

    asyncio.run(go())


@contextlib.contextmanager
def bulk(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN")
        yield conn
        conn.execute("COMMIT")
    finally:
        conn.close()


def add_contacts(
    conn: sqlite3.Connection,
    users: list[tuple[str, datetime, datetime]],
    started: datetime,
) -> None:
    """(user, due, last message) -> a contact, its conversation, its waiting pricing run."""
    created = to_ms(started)
    conn.executemany(
        "INSERT INTO contacts (account_id, user_id, username, tags, fields, first_seen_at,"
        " last_seen_at) VALUES (?, ?, ?, '[]', '{}', ?, ?)",
        [(IG_ACCOUNT, u, f"fan{u[-6:]}", created, to_ms(m)) for u, _, m in users],
    )
    conn.executemany(
        "INSERT INTO conversations (account_id, user_id, platform, state,"
        " last_user_message_at, updated_at) VALUES (?, ?, 'instagram', ?, ?, ?)",
        [(IG_ACCOUNT, u, state_json(m), to_ms(m), to_ms(m)) for u, _, m in users],
    )
    conn.executemany(
        "INSERT INTO flow_runs (account_id, user_id, flow_id, run, due_at, updated_at)"
        " VALUES (?, ?, 'pricing', ?, ?, ?)",
        [(IG_ACCOUNT, u, run_json(d, started), to_ms(d), created) for u, d, _ in users],
    )


def fill(path: Path, runs: int, outbox: int, seed: int) -> Store:
    """The million far-future follow-ups (and queued sends), loaded in bulk."""
    started = time.monotonic()
    rng = random.Random(seed)
    now = datetime.now(UTC)
    create_schema(path)
    store = Store(path, runs, outbox)
    chunk = 50_000
    with bulk(path) as conn:
        for base in range(0, runs, chunk):
            users = []
            for i in range(base, min(base + chunk, runs)):
                due = now + timedelta(days=1 + 29 * rng.random())
                users.append((user_id(i), due, due - timedelta(days=3)))
            add_contacts(conn, users, now)
        body = json.dumps({"text": "Your order has shipped."})
        intent = '{"author":"automation","content":"promotional","comment_id":null,' + (
            '"optin":null,"topic":null,"tag":null,"via_token":null}'
        )
        for base in range(0, outbox, chunk):
            rows = []
            for i in range(base, min(base + chunk, outbox)):
                due = now + timedelta(days=1 + 29 * rng.random())
                rows.append(
                    (
                        IG_ACCOUNT,
                        user_id(i),
                        intent,
                        body,
                        to_ms(due),
                        to_ms(due + timedelta(hours=20)),
                        to_ms(now),
                    )
                )
            conn.executemany(
                "INSERT INTO outbox (account_id, user_id, kind, intent, body, priority, due_at,"
                " deadline, created_at, source) VALUES (?, ?, 'message', ?, ?, 1, ?, ?, ?,"
                " 'bench/later')",
                rows,
            )
    store.load_seconds = time.monotonic() - started
    return store


def add_due(store: Store, sim: Simulator, first: datetime, count: int, window: float) -> None:
    """`count` follow-ups due evenly from `first` over `window` seconds, to open windows."""
    users = []
    for i in range(count):
        due = first + timedelta(seconds=window * i / max(count - 1, 1))
        uid = user_id(RUN_BASE + i)
        store.due[uid] = due
        users.append((uid, due, due - timedelta(hours=1)))
    open_windows(sim, users)
    with bulk(store.path) as conn:
        add_contacts(conn, users, datetime.now(UTC))


def add_overdue(store: Store, sim: Simulator, count: int, restart: int) -> None:
    """Follow-ups already due when the daemon starts: its first tick sends them."""
    now = datetime.now(UTC)
    users = [
        (
            user_id(RUN_BASE + 5_000_000 + restart * 10_000 + i),
            now - timedelta(minutes=1),
            now - timedelta(hours=1),
        )
        for i in range(count)
    ]
    store.overdue.append([u for u, _, _ in users])
    open_windows(sim, users)
    with bulk(store.path) as conn:
        add_contacts(conn, users, now)


def open_windows(sim: Simulator, users: list[tuple[str, datetime, datetime]]) -> None:
    for uid, _, last in users:
        sim.model.contact(IG_ACCOUNT, uid)
        sim.model.user_message(IG_ACCOUNT, uid, last)


@dataclass
class Start:
    ready: float  # spawn to the ready line
    first_send: float | None  # spawn to the first overdue follow-up accepted by the simulator


async def start_and_time(daemon: Daemon, sim: Simulator, overdue: set[str]) -> Start:
    spawned = time.monotonic()
    seen = len(sim.log)
    ready = await daemon.start()
    deadline = spawned + 120
    while time.monotonic() < deadline:
        if any(e.user_id in overdue for e in sim.log.entries[seen:] if e.accepted):
            return Start(ready, time.monotonic() - spawned)
        await asyncio.sleep(0.01)
    return Start(ready, None)


def quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    v = sorted(values)
    return {
        "p50": statistics.median(v),
        "p99": v[min(len(v) - 1, int(len(v) * 0.99))],
        "max": v[-1],
    }


async def measure(store: Store, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    clock = SystemClock()
    rules = SimulatorRules(dm_cap_per_hour=10**9, private_replies_per_hour=10**9)
    # No webhooks back: the bot needs no echoes at-most-once, and they would only add load.
    sim = Simulator(
        clock, [(IG_ACCOUNT, "instagram", IG_TOKEN)], SECRET, rules=rules, echoes=False
    )
    runner = web.AppRunner(create_simulator_app(sim), handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    graph = f"http://127.0.0.1:{runner.addresses[0][1]}"
    profile = tmp / "no_caps.yaml"
    profile.write_text(NO_CAPS)
    settings = bot_settings(store.path, graph, port=free_port())
    settings["policy_profile"] = str(profile)
    daemon = Daemon(write_settings(tmp / "bot.yaml", settings), tmp / "daemon.log")
    rss: list[float] = []
    out: dict[str, Any] = {}
    try:
        add_overdue(store, sim, args.overdue, 0)
        add_due(
            store, sim, datetime.now(UTC) + timedelta(seconds=args.lead), args.due, args.window
        )
        first = await start_and_time(daemon, sim, set(store.overdue[0]))
        out["first start"] = first
        end = max(store.due.values()) + timedelta(seconds=5)
        while datetime.now(UTC) < end:
            rss.append(rss_mb(daemon.pid)[0])
            await asyncio.sleep(0.5)
        # Let stragglers go (bounded), then read the outcome.
        for _ in range(60):
            if sum(1 for e in sim.log.entries if e.accepted and e.user_id in store.due) >= len(
                store.due
            ):
                break
            rss.append(rss_mb(daemon.pid)[0])
            await asyncio.sleep(0.5)
        out["load"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
        out["rss_max"] = max(rss)
        out["rss_hwm"] = rss_mb(daemon.pid)[1]
        await daemon.kill()
        out["lateness"] = lateness(store, sim)
        add_overdue(store, sim, args.overdue, 1)
        out["restart after kill -9"] = await start_and_time(daemon, sim, set(store.overdue[1]))
        out["rss_after_restart"] = rss_mb(daemon.pid)
        await daemon.stop()
    finally:
        if daemon.proc is not None and daemon.proc.returncode is None:
            await daemon.kill()
        await runner.cleanup()
        await sim.close()
    out["refused"] = len(sim.refused())
    out["log_tail"] = daemon.log.read_text(errors="replace").splitlines()[-5:]
    return out


def lateness(store: Store, sim: Simulator) -> dict[str, Any]:
    sent = {e.user_id: e.time for e in sim.log.entries if e.accepted and e.user_id in store.due}
    with contextlib.closing(sqlite3.connect(store.path)) as conn:
        fired = {
            u: datetime.fromtimestamp(ms / 1000, UTC)
            for u, ms in conn.execute(
                "SELECT user_id, min(created_at) FROM outbox WHERE source = 'pricing/nudge'"
                " GROUP BY user_id"
            )
            if u in store.due
        }
        outcomes = [
            f"{outcome} {reason or ''}".strip()
            for u, outcome, reason in conn.execute("SELECT user_id, outcome, reason FROM send_log")
            if u in store.due and outcome != "sent"
        ]
    return {
        "due": len(store.due),
        "fired": len(fired),
        "sent": len(sent),
        "not sent": len(outcomes),
        "not sent why": sorted(set(outcomes)),
        "fired_late": quantiles([(t - store.due[u]).total_seconds() for u, t in fired.items()]),
        "sent_late": quantiles([(t - store.due[u]).total_seconds() for u, t in sent.items()]),
    }


class _Rollback(Exception):
    pass


async def tick_costs(path: Path) -> dict[str, float]:
    """Where a dispatcher tick's time goes: each store call it makes, timed alone (ms).

    The calls are the real ones (bot/store/flows.py, bot/store/outbox.py) on the bench's
    database once the daemon has stopped; `recover` is what every start runs.
    """
    db = await Database.open(path)
    now = datetime.now(UTC)
    out: dict[str, float] = {}

    async def timed(name: str, call: Any, repeat: int = 3) -> None:
        took = []
        for _ in range(repeat):
            t = time.perf_counter()
            await call()
            took.append(time.perf_counter() - t)
        out[name] = statistics.median(took) * 1000

    async def claim(send_class: SendClass) -> None:
        with contextlib.suppress(_Rollback):
            async with db.transaction() as conn:
                await outbox.claim_due(
                    conn,
                    IG_ACCOUNT,
                    send_class=send_class,
                    now=now,
                    limit=10,
                    owner="bench",
                    lease_until=now,
                )
                raise _Rollback

    r = db.reader
    try:
        await timed("engine: due_runs", lambda: runs.due_runs(r, now))
        await timed("engine: next_run_due", lambda: runs.next_run_due(r))
        await timed("sender: pending_past_deadline", lambda: outbox.pending_past_deadline(r, now))
        for send_class in SendClass:
            what = send_class.value
            await timed(f"sender: claim_due ({what})", lambda c=send_class: claim(c))
            await timed(
                f"sender: next_due_at ({what})",
                lambda c=send_class: outbox.next_due_at(r, IG_ACCOUNT, send_class=c, after=now),
            )
            await timed(
                f"sender: sends_since ({what})",
                lambda c=send_class: outbox.sends_since(
                    r, IG_ACCOUNT, send_class=c, since=now - timedelta(hours=1)
                ),
            )
        config = config_from_mapping(bot_settings(path, "http://127.0.0.1:9"), env={}, base=path)
        sender = Sender(db, SystemClock(), None, PolicyProfile(), config, Metrics())  # type: ignore[arg-type]
        await timed("start: Sender.recover", sender.recover, repeat=1)
    finally:
        await db.close()
    return out


def verdict(value: float | None, target: float, unit: str) -> str:
    if value is None:
        return f"n/a (target < {target:g} {unit})"
    ok = "ok" if value < target else "MISSED"
    return f"{value:8.2f} {unit}  (target < {target:g} {unit}: {ok})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000, help="follow-ups waiting")
    parser.add_argument("--outbox", type=int, default=0, help="queued sends due later, too")
    parser.add_argument("--due", type=int, default=3000, help="follow-ups due in the window")
    parser.add_argument("--window", type=float, default=60.0, help="seconds they fall due over")
    parser.add_argument("--lead", type=float, default=20.0, help="seconds before the first")
    parser.add_argument("--overdue", type=int, default=20, help="due before each start")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--keep", type=Path, help="build the database in this folder, keep it")
    parser.add_argument(
        "--reuse", action="store_true", help="with --keep: use the database already there"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scheduler-") as tmpdir:
        tmp = args.keep or Path(tmpdir)
        tmp.mkdir(parents=True, exist_ok=True)
        db = tmp / "bot.sqlite3"
        if args.reuse and db.exists():
            store = Store(db, args.runs, args.outbox)
        else:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
            print(f"loading {args.runs:,} follow-ups, {args.outbox:,} queued sends", flush=True)
            store = fill(db, args.runs, args.outbox, args.seed)
        store.size_mb = sum(p.stat().st_size for p in tmp.glob("bot.sqlite3*")) / 2**20
        print(
            f"loaded in {store.load_seconds:.0f} s; database {store.size_mb:,.0f} MB", flush=True
        )
        out = asyncio.run(measure(store, args, tmp))
        costs = asyncio.run(tick_costs(db))
    first, again, late = out["first start"], out["restart after kill -9"], out["lateness"]
    print(f"\n{args.runs:,} pending follow-ups + {args.outbox:,} queued sends")
    print(f"load average during the run: {out['load']} (2 cores, shared machine)")
    print(f"resident memory, max VmRSS  {verdict(out['rss_max'], TARGET_RSS_MB, 'MB')}")
    print(f"resident memory, VmHWM      {verdict(out['rss_hwm'], TARGET_RSS_MB, 'MB')}")
    for name, s in (("first start", first), ("restart after kill -9", again)):
        print(f"{name:22}: ready {verdict(s.ready, TARGET_READY_S, 's')}")
        print(f"{'':22}  first due send {verdict(s.first_send, TARGET_READY_S, 's')}")
    print(
        f"lateness over {late['due']:,} follow-ups due within {args.window:g} s:"
        f" {late['fired']:,} fired, {late['sent']:,} sent, {late['not sent']} not sent"
    )
    for what in ("fired_late", "sent_late"):
        q = late[what]
        if q:
            print(
                f"  {what.replace('_', ' ')}: p50 {q['p50']:.3f} s, max {q['max']:.3f} s,"
                f" p99 {verdict(q['p99'], TARGET_P99_S, 's')}"
            )
    print(f"sends refused by the simulator: {out['refused']}")
    print("where a dispatcher tick's time goes (each store call alone, median of 3):")
    for name, ms in costs.items():
        print(f"  {ms:10.1f} ms  {name}")
    summary = {
        "runs": args.runs,
        "outbox": args.outbox,
        "load_s": round(store.load_seconds, 1),
        "db_mb": round(store.size_mb),
        "rss_max_mb": round(out["rss_max"], 1),
        "rss_hwm_mb": round(out["rss_hwm"], 1),
        "ready_s": [round(first.ready, 2), round(again.ready, 2)],
        "first_send_s": [
            None if s.first_send is None else round(s.first_send, 2) for s in (first, again)
        ],
        "fired_p99_s": late["fired_late"].get("p99"),
        "sent_p99_s": late["sent_late"].get("p99"),
        "sent": late["sent"],
        "due": late["due"],
        "tick_ms": {k: round(v, 1) for k, v in costs.items()},
        "load": out["load"],
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
