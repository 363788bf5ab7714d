"""Crash safety (issue 4, item 7): the real daemon, killed with SIGKILL at random moments while
signed webhooks pour in, restarted each time, and then held to its promises:

- every webhook it answered 200 is processed: no inbox row left `new` (or `bad`), and every
  event of every acknowledged delivery is in the `events` table;
- every scheduled follow-up still exists: each PRICING commenter has their `pricing` run with a
  due time (waiting for an answer, or the 3-day nudge), their private reply and public reply in
  the outbox; each "menu" user who never tapped still has the 1-hour reply timeout;
- nothing is sent twice: the simulator (the referee, on the wall clock) accepted at most one
  private reply per comment and refused none as "already sent"; every DM it accepted maps to
  one outbox row, sent once (by its message id) or settled `unknown` (in flight at a kill);
- at-most-once (the default `delivery` setting): at most the single send in flight at a kill is
  left `sending`, and so settled `unknown`, per kill.

Real processes and real time: the daemon runs as `python -m bot --config bot.yaml run`, the
simulator and the webhook player run in this test's event loop on loopback, and every wait is
a short poll with a deadline. The quick variant runs in CI; the soak variant with --runslow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import socket
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
from aiohttp import web

from bot.clock import SystemClock
from bot.delivery import MalformedDelivery, parse_delivery
from bot.simulator import Delivered, Reason, Simulator, create_simulator_app

ROOT = Path(__file__).resolve().parent.parent
APP_SECRET = "crash-test-app-secret"
IG = "17841400000000001"
FB = "100000000000001"
TOKENS = {IG: "crash-ig-token", FB: "crash-page-token"}


# --- the daemon as a process ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_config(tmp: Path, port: int, graph_url: str) -> Path:
    config = {
        "app_secret": APP_SECRET,
        "verify_token": "crash-verify-token",
        "listen": {"host": "127.0.0.1", "port": port},
        "database": {"path": str(tmp / "bot.sqlite3")},
        "flows_dir": str(ROOT / "flows"),
        "templates_dir": str(ROOT / "templates"),
        "accounts": [
            {
                "id": IG,
                "platform": "instagram",
                "name": "crash_creator",
                "token": TOKENS[IG],
                "graph_base_url": graph_url,
            },
            {
                "id": FB,
                "platform": "messenger",
                "name": "Crash Page",
                "token": TOKENS[FB],
                "graph_base_url": graph_url,
            },
        ],
    }
    path = tmp / "bot.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def _open_log(path: Path) -> IO[bytes]:
    return path.open("ab")


class Daemon:
    """`python -m bot run` in a child process; its stderr log goes to `log`."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self.starts: list[float] = []  # seconds from spawn to the ready line

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self, within: float = 30.0) -> int:
        started = time.monotonic()
        err = _open_log(self.log)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot",
                "--config",
                str(self.config),
                "run",
                cwd=ROOT,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
            )
        finally:
            err.close()
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), within)
        if not line:
            await self._reap()
            raise AssertionError(f"the daemon exited before ready:\n{self.tail()}")
        ready = json.loads(line)
        assert ready["ready"] is True
        self.starts.append(time.monotonic() - started)
        return int(ready["port"])

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(self._reap(), 10.0)

    async def stop(self, within: float = 30.0) -> int:
        """SIGTERM: the graceful path (stop accepting, flush the inbox, finish the batch)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self._reap(), within)

    async def _reap(self) -> int:
        assert self.proc is not None and self.proc.stdout is not None
        await self.proc.stdout.read()  # to EOF, so the pipe transport closes cleanly
        return await self.proc.wait()

    def tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def query(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """A short read from the test process (WAL: never blocks the daemon's writer)."""
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        return [tuple(r) for r in conn.execute(sql, args).fetchall()]


def _in_flight_at_restart(db: Path) -> int:
    sql = "SELECT count(*) FROM send_log WHERE reason = 'in_flight_at_restart'"
    return int(query(db, sql)[0][0])


async def poll(check: Callable[[], bool], within: float, every: float = 0.05) -> bool:
    deadline = time.monotonic() + within
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(every)


# --- the load: users commenting PRICING and writing DMs, played by the simulator -----------


@dataclass
class Load:
    """Users arriving at `rate` a second; each runs a short seeded script of webhooks.

    Two kinds of user: a commenter (PRICING on a reel, and half of them answer the private
    reply by DM, which moves the `pricing` flow to its 3-day nudge) and a "menu" DM user
    (half of them tap a quick reply, half leave the 1-hour timeout pending). Meta's habits
    are played too: undelivered webhooks are retried, and some delivered ones are duplicated.
    """

    sim: Simulator
    seed: int
    rate: float
    commenters: list[str] = field(default_factory=list)
    repliers: list[str] = field(default_factory=list)
    menu_waiting: list[tuple[str, str]] = field(default_factory=list)  # (account, user)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    redelivered: int = 0
    duplicated: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        rng = random.Random(self.seed)
        i = 0
        while not stop.is_set():
            self._spawn(self._actor(i))
            i += 1
            if rng.random() < 0.1:
                self._spawn(self._duplicate(rng))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), rng.expovariate(self.rate))
        await self.settle()

    async def settle(self) -> None:
        while self.tasks:
            await asyncio.gather(*list(self.tasks))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _actor(self, i: int) -> None:
        rng = random.Random(f"{self.seed}:{i}")
        player = self.sim.player
        if rng.random() < 0.6:
            name = f"c{i}"
            self.commenters.append(name)
            await player.comment(IG, name, f"reel{rng.randrange(3)}", "PRICING please")
            if rng.random() < 0.5:
                self.repliers.append(name)
                await asyncio.sleep(rng.uniform(0.05, 0.5))
                await player.dm(IG, name, "how much is it for a team of five?")
        else:
            name = f"m{i}"
            account = rng.choice((IG, FB))
            await player.dm(account, name, "menu")
            if rng.random() < 0.5:
                await asyncio.sleep(rng.uniform(0.05, 0.5))
                await player.quick_reply(account, name, "MENU_HOURS", "Opening hours")
            else:
                self.menu_waiting.append((account, name))

    async def _duplicate(self, rng: random.Random) -> None:
        acked = [d for d in self.sim.deliveries if d.status == 200]
        if acked:
            self.duplicated += 1
            await self.sim.player.redeliver(rng.choice(acked))

    def unacked(self) -> list[Delivered]:
        """One attempt per delivery body that was never answered 200 (Meta retries those)."""
        acked = {d.body for d in self.sim.deliveries if d.status == 200}
        pending: dict[bytes, Delivered] = {}
        for d in self.sim.deliveries:
            if d.body not in acked:
                pending.setdefault(d.body, d)
        return list(pending.values())

    async def retry_unacked(self) -> int:
        todo = self.unacked()
        self.redelivered += len(todo)
        await asyncio.gather(*(self.sim.player.redeliver(d) for d in todo))
        return len(todo)

    async def retry_forever(self, every: float = 0.3) -> None:
        while True:
            await asyncio.sleep(every)
            await self.retry_unacked()


# --- the scenario ---------------------------------------------------------------------------


@dataclass
class Kill:
    at: float  # seconds into the run
    sending: list[int]  # outbox rows left 'sending' (their Graph call had started)
    inbox_new: int  # acknowledged deliveries not yet processed at the kill
    unknown: int = 0  # rows the restart then settled `unknown` (in_flight_at_restart)


@dataclass
class Run:
    db: Path
    sim: Simulator
    load: Load
    kills: list[Kill]
    starts: list[float]
    seconds: float


async def crash_run(
    tmp: Path,
    *,
    seed: int,
    kills: int,
    rate: float,
    between: tuple[float, float],
    down: tuple[float, float] = (0.0, 0.3),
    tail: float = 1.0,
) -> Run:
    """Serve load, SIGKILL the daemon `kills` times at seeded random moments, stop it cleanly."""
    began = time.monotonic()
    rng = random.Random(seed)
    clock = SystemClock()
    sim = Simulator(
        clock, [(IG, "instagram", TOKENS[IG]), (FB, "messenger", TOKENS[FB])], APP_SECRET
    )
    sim.webhook_timeout = 5.0
    # Each Graph call takes a little while, as Meta's do, so some kills land mid-send: the
    # at-most-once path (in flight -> unknown, never resent) is exercised, not just claimed.
    sim.faults.latency = 0.03
    runner = web.AppRunner(create_simulator_app(sim), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    graph_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    port = _free_port()  # fixed across restarts, as behind a reverse proxy
    daemon = Daemon(_write_config(tmp, port, graph_url), tmp / "daemon.log")
    db = tmp / "bot.sqlite3"
    inbox_db = tmp / "bot.inbox.sqlite3"  # the inbox's own file (bot/store/inbox.py)
    load = Load(sim, seed, rate)
    stop_load = asyncio.Event()
    record: list[Kill] = []
    load_task: asyncio.Task[None] | None = None
    retry_task: asyncio.Task[None] | None = None
    try:
        sim.webhook_url = f"http://127.0.0.1:{await daemon.start()}/webhook"
        load_task = asyncio.create_task(load.run(stop_load))
        retry_task = asyncio.create_task(load.retry_forever())
        for _ in range(kills):
            await asyncio.sleep(rng.uniform(*between))
            await daemon.kill()
            record.append(
                Kill(
                    at=time.monotonic() - began,
                    sending=[
                        r[0] for r in query(db, "SELECT id FROM outbox WHERE state = 'sending'")
                    ],
                    inbox_new=query(inbox_db, "SELECT count(*) FROM inbox WHERE state = 'new'")[0][
                        0
                    ],
                )
            )
            await asyncio.sleep(rng.uniform(*down))  # webhooks fail meanwhile; Meta retries
            before = _in_flight_at_restart(db)
            await daemon.start()  # recover() runs before the ready line
            record[-1].unknown = _in_flight_at_restart(db) - before
        await asyncio.sleep(tail)
        stop_load.set()
        await asyncio.wait_for(load_task, 30.0)
        retry_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await retry_task
        # Meta keeps retrying what was never acknowledged; the daemon is up now.
        for _ in range(20):
            if not await load.retry_unacked():
                break
            await asyncio.sleep(0.1)
        processed = await poll(
            lambda: query(inbox_db, "SELECT count(*) FROM inbox WHERE state = 'new'")[0][0] == 0,
            20.0,
        )
        assert processed, f"the inbox did not drain:\n{daemon.tail()}"
        rc = await daemon.stop()
        assert rc == 0, f"the daemon stopped with {rc}:\n{daemon.tail()}"
        await sim.drain()  # echoes of the last sends (failing now: the daemon is down)
    finally:
        stop_load.set()
        for task in (load_task, retry_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for task in list(load.tasks):
            task.cancel()
        await asyncio.gather(*list(load.tasks), return_exceptions=True)
        if daemon.running:
            await daemon.kill()
        await runner.cleanup()
        await sim.close()
    return Run(db, sim, load, record, daemon.starts, time.monotonic() - began)


# --- the guarantees -------------------------------------------------------------------------


def _canonical(message: Any) -> str:
    return json.dumps(message, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def check_guarantees(run: Run) -> tuple[list[str], dict[str, Any]]:
    """Every broken promise, as a sentence; and the figures, for the report."""
    db, sim, load = run.db, run.sim, run.load
    inbox_db = db.with_name("bot.inbox.sqlite3")
    problems: list[str] = []

    # 1. Every acknowledged webhook is processed.
    states = dict(query(inbox_db, "SELECT state, count(*) FROM inbox GROUP BY state"))
    if set(states) - {"done"}:
        problems.append(f"inbox rows not done after restart and shutdown: {states}")
    acked = {d.body for d in sim.deliveries if d.status == 200}
    expected: set[tuple[str, str]] = set()
    for body in acked:
        try:
            expected.update((ev.account_id, ev.key) for ev in parse_delivery(body).events)
        except MalformedDelivery as exc:  # the player only sends well-formed deliveries
            problems.append(f"the player sent a malformed delivery: {exc}")
    seen = set(query(db, "SELECT account_id, key FROM events"))
    lost = expected - seen
    if lost:
        problems.append(
            f"{len(lost)} acknowledged events never processed, e.g. {sorted(lost)[:3]}"
        )

    # 2. Every scheduled follow-up still exists.
    acked_comments = {
        d.comment_id: d.user_id
        for d in sim.deliveries
        if d.status == 200 and d.action == "comment" and d.comment_id
    }
    outbox = query(
        db, "SELECT id, account_id, user_id, comment_id, kind, body, state, due_at FROM outbox"
    )
    by_comment: dict[tuple[str, str], list[str]] = {}
    for _, _, _, comment_id, kind, _, state, _ in outbox:
        if comment_id:
            by_comment.setdefault((comment_id, kind), []).append(state)
    runs = {
        (a, u, f): due
        for a, u, f, due in query(db, "SELECT account_id, user_id, flow_id, due_at FROM flow_runs")
    }
    for comment_id, user_id in acked_comments.items():
        for kind in ("private_reply", "public_reply"):
            if len(by_comment.get((comment_id, kind), [])) != 1:
                problems.append(
                    f"comment {comment_id}: {by_comment.get((comment_id, kind))} {kind} rows"
                )
        if runs.get((IG, str(user_id), "pricing")) is None:
            problems.append(f"commenter {user_id} of {comment_id} lost the pricing run's due time")
    for account, name in load.menu_waiting:
        if runs.get((account, sim.user_id(name), "dm_menu")) is None:
            problems.append(f"menu user {name} on {account} lost the reply timeout")
    pending = sum(1 for r in outbox if r[6] == "pending")

    # 3. Nothing sent twice.
    refusals = Counter(str(e.reason) for e in sim.refused())
    # What Meta refuses because it was already sent. (Other refusals are printed with the
    # figures: they are not about crashes, e.g. a user's DM racing an in-flight private reply.)
    for reason in (Reason.PRIVATE_REPLY_USED, Reason.TOKEN_USED, Reason.OPTIN_DUPLICATE):
        if refusals[str(reason)]:
            problems.append(f"{refusals[str(reason)]} sends refused as {reason}: sent twice")
    accepted = [e for e in sim.accepted() if e.endpoint == "messages"]
    replies = Counter(
        e.recipient.get("comment_id") for e in accepted if "comment_id" in e.recipient
    )
    twice = {c: n for c, n in replies.items() if n > 1}
    if twice:
        problems.append(f"private replies accepted more than once: {twice}")
    public = Counter(c.parent_id for c in sim.model.comments.values() if c.user_id == c.account_id)
    if any(n > 1 for n in public.values()):
        problems.append(f"public replies posted more than once: {public.most_common(3)}")
    sent_mids = dict(
        query(
            db,
            "SELECT message_id, outbox_id FROM send_log WHERE outcome = 'sent'"
            " AND message_id IS NOT NULL",
        )
    )
    settled_twice = query(
        db,
        "SELECT outbox_id, count(*) FROM send_log WHERE outcome IN ('sent', 'unknown')"
        " AND outbox_id IS NOT NULL GROUP BY outbox_id HAVING count(*) > 1",
    )
    if settled_twice:
        problems.append(f"outbox rows recorded as sent more than once: {settled_twice[:5]}")
    unknown_rows: Counter[tuple[str, str, str]] = Counter(
        (a, u or "", _canonical(json.loads(b)))
        for _, a, u, _, kind, b, state, _ in outbox
        if state == "unknown" and kind != "public_reply"
    )
    unknown_prs = {c for _, _, _, c, kind, _, s, _ in outbox if s == "unknown" and c}
    orphans: Counter[tuple[str, str, str]] = Counter()
    for e in accepted:
        if e.message_id in sent_mids:
            continue
        if "comment_id" in e.recipient:
            if e.recipient["comment_id"] not in unknown_prs:
                problems.append(f"private reply {e.message_id} sent but not recorded")
            continue
        orphans[(e.account_id, str(e.recipient.get("id")), _canonical(e.body.get("message")))] += 1
    for key, n in orphans.items():
        if n > unknown_rows[key]:
            problems.append(f"{n} DMs to {key[1]} accepted but only {unknown_rows[key]} unknown")

    # 4. At most once: one send in flight per kill, at most.
    for k in run.kills:
        if k.unknown > 1:
            problems.append(
                f"the restart after the kill at {k.at:.1f}s settled {k.unknown} sends as"
                f" unknown (never to be sent), not at most the one in flight; rows left"
                f" 'sending' by the kill: {k.sending}"
            )

    figures = {
        "seconds": round(run.seconds, 1),
        "kills": len(run.kills),
        "ready_seconds": [round(s, 2) for s in run.starts],
        "deliveries": len(sim.deliveries),
        "acked": len(acked),
        "events": len(seen),
        "inbox_new_at_kills": [k.inbox_new for k in run.kills],
        "sending_at_kills": [len(k.sending) for k in run.kills],
        "unknown_after_kills": [k.unknown for k in run.kills],
        "retried": load.redelivered,
        "duplicated": load.duplicated,
        "comments": len(acked_comments),
        "accepted": len(sim.accepted()),
        "unknown_accepted": sum(orphans.values()),
        "outbox_pending": pending,
        "refused": dict(refusals),
    }
    return problems, figures


async def _crash_test(tmp_path: Path, **kw: Any) -> None:
    run = await crash_run(tmp_path, **kw)
    problems, figures = check_guarantees(run)
    print(json.dumps(figures))
    assert not problems, "\n".join(problems) + "\n" + json.dumps(figures)
    # The scenario must have exercised something, or it proves nothing.
    assert figures["comments"] > 10 and figures["accepted"] > 10, figures


async def test_kill_9_under_load_loses_no_webhook_and_sends_nothing_twice(tmp_path: Path) -> None:
    await _crash_test(tmp_path, seed=4, kills=3, rate=12.0, between=(1.0, 2.5))


@pytest.mark.slow
async def test_kill_9_soak_loses_no_webhook_and_sends_nothing_twice(tmp_path: Path) -> None:
    await _crash_test(tmp_path, seed=44, kills=8, rate=15.0, between=(0.3, 5.0), tail=3.0)
