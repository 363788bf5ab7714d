"""A viral hour: is the deadline-aware queue worth it? EDF against plain FIFO, same everything.

50,000 comments on one Instagram account within an hour (90% PRICING, 10% GUIDE, one new
user each), mixed with DM conversations: commenters who answer the private reply (which opens
their 24 h window; the pricing flow then answers and asks for a weekly opt-in, the lead flow
asks for an e-mail), people who opt in (their 3-day nudge then goes on the marketing token),
people who never give the e-mail (the lead flow's 23 h `collect` timeout then sends its
"no e-mail" message with one hour of window left), and a steady stream of "menu" DMs. All
under the policy caps: 750 private replies and 200 automated DMs per rolling hour.

Every message is counted once its fate is settled: delivered (Meta, i.e. the simulator,
accepted it, so before its basis closed) or expired in the queue. The run goes on, on a
`VirtualClock`, until nothing is queued or due; it prints both totals per order and the ratio.

How it runs, and why. The real `Engine`, inbox worker, outbox, `Sender` and `Dispatcher` run
in this process over one SQLite file; the `Sender` calls the Graph API simulator through the
real `GraphClient` over loopback, so the referee judges every send. The one shortcut: user
actions are written straight into the inbox table instead of POSTed to the webhook, because
the webhook's cost is what bench/ingest.py measures and here it would only add minutes.
Driving `Sender` alone over hand-made outbox rows would have been faster still, but the
question is about what the example flows queue (the deadlines come from the policy core, the
follow-ups from the flow runtime), so the flows run for real.

FIFO is the same code with the claim's ORDER BY switched to the row id
(`claim_due(order=QueueOrder.FIFO)` in bot/store/outbox.py).

    python bench/burst.py                 # 50,000 comments (several minutes per order)
    python bench/burst.py --scale 0.1     # 5,000 comments, caps scaled alike: same shape
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import heapq
import itertools
import json
import math
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from _common import IG_ACCOUNT, IG_TOKEN, SECRET, bot_settings
from aiohttp import web

import bot.sender
from bot.app import RUNTIME, create_app
from bot.clock import VirtualClock, to_ms, utc
from bot.config import config_from_mapping
from bot.policy import PolicyProfile
from bot.simulator import Simulator, SimulatorRules, create_simulator_app
from bot.store import outbox
from bot.store.outbox import QueueOrder

START = utc(2026, 11, 23, 12, 0, 0)
H = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Scenario:
    comments: int = 50_000
    viral: timedelta = H
    guide_share: float = 0.10  # GUIDE comments (lead capture); the rest say PRICING
    answer: float = 0.30  # commenters who answer the private reply
    answer_delay: timedelta = timedelta(minutes=10)  # mean, exponential
    optin: float = 0.40  # pricing users who tap the weekly opt-in
    email: float = 0.60  # guide users who give an e-mail (the rest time out after 23 h)
    menu_per_hour: float = 60.0  # "menu" DMs from other people, for the first 3 days
    menu_days: float = 3.0
    tap: float = 0.5  # menu users who tap "Pricing"
    dm_cap: int = 200
    pr_cap: int = 750
    horizon: timedelta = timedelta(days=14)
    seed: int = 2026

    def scaled(self, s: float) -> Scenario:
        """Fewer comments with caps scaled alike: the same overload, the same queue shape."""
        return replace(
            self,
            comments=round(self.comments * s),
            menu_per_hour=self.menu_per_hour * s,
            dm_cap=max(1, round(self.dm_cap * s)),
            pr_cap=max(1, round(self.pr_cap * s)),
        )


@dataclass
class Result:
    order: QueueOrder
    delivered: Counter[str] = field(default_factory=Counter)
    waits: dict[str, list[float]] = field(default_factory=dict)  # hours from queued to sent
    expired: Counter[str] = field(default_factory=Counter)
    other: Counter[str] = field(default_factory=Counter)  # dropped by policy, still queued
    late_sends: int = 0  # sends after their deadline: must stay 0
    refused: int = 0  # sends the simulator refused: must stay 0
    seconds: float = 0.0
    ticks: int = 0
    virtual_end: datetime = START

    @property
    def total_delivered(self) -> int:
        return sum(self.delivered.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "order": self.order.value,
            "delivered": dict(self.delivered),
            "waits": self.waits,
            "expired": dict(self.expired),
            "other": dict(self.other),
            "late_sends": self.late_sends,
            "refused": self.refused,
            "seconds": self.seconds,
            "ticks": self.ticks,
            "virtual_end": self.virtual_end.isoformat(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Result:
        return cls(
            order=QueueOrder(d["order"]),
            delivered=Counter(d["delivered"]),
            waits=d["waits"],
            expired=Counter(d["expired"]),
            other=Counter(d["other"]),
            late_sends=d["late_sends"],
            refused=d["refused"],
            seconds=d["seconds"],
            ticks=d["ticks"],
            virtual_end=datetime.fromisoformat(d["virtual_end"]),
        )

    @property
    def total_expired(self) -> int:
        return sum(self.expired.values())


def category(kind: str, source: str | None) -> str:
    """What a row is, for the report; the deadlines differ by category, not within one."""
    if kind == "public_reply":
        return "public reply"  # no basis, no deadline
    if kind == "private_reply":
        return "private reply"  # 7 days from the comment
    if source == "pricing/nudge":
        return "3-day nudge"  # the marketing token's, months away
    if source == "lead_guide_comment/no_email":
        return "23h timeout msg"  # what is left of the window: about an hour
    return "window reply"  # 24 h from the user's message


@contextlib.contextmanager
def queue_order(order: QueueOrder) -> Iterator[None]:
    """The sender takes due rows in `order` (it calls `claim_due` with the default, EDF)."""
    original = bot.sender.claim_due
    bot.sender.claim_due = functools.partial(outbox.claim_due, order=order)  # type: ignore[assignment]
    try:
        yield
    finally:
        bot.sender.claim_due = original  # type: ignore[assignment]


class Actions:
    """User actions on a timeline, whole seconds apart at most, in order."""

    def __init__(self) -> None:
        self._heap: list[tuple[datetime, int, str, str, dict[str, Any]]] = []
        self._seq = itertools.count()

    def add(self, at: datetime, action: str, user: str, **kw: Any) -> None:
        at = at.replace(microsecond=0) + timedelta(seconds=1)  # batch into whole seconds
        heapq.heappush(self._heap, (at, next(self._seq), action, user, kw))

    def next_at(self) -> datetime | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: datetime) -> list[tuple[str, str, dict[str, Any]]]:
        out = []
        while self._heap and self._heap[0][0] <= now:
            _, _, action, user, kw = heapq.heappop(self._heap)
            out.append((action, user, kw))
        return out


async def run(order: QueueOrder, sc: Scenario, workdir: Path) -> Result:
    clock = VirtualClock(START)
    rules = SimulatorRules(dm_cap_per_hour=sc.dm_cap, private_replies_per_hour=sc.pr_cap)
    sim = Simulator(
        clock,
        [(IG_ACCOUNT, "instagram", IG_TOKEN)],
        SECRET,
        rules=rules,
        seed=sc.seed,
        echoes=False,  # no reconciliation needed at-most-once; echoes would only add work
        own_comment_webhooks=False,
    )
    sim_runner = web.AppRunner(create_simulator_app(sim), handle_signals=False)
    await sim_runner.setup()
    await web.TCPSite(sim_runner, "127.0.0.1", 0).start()
    graph_url = f"http://127.0.0.1:{sim_runner.addresses[0][1]}"
    config = config_from_mapping(
        bot_settings(workdir / f"burst-{order}.sqlite3", graph_url), env={}, base=workdir
    )
    base = PolicyProfile()
    profile = base.with_platform(
        replace(
            base.instagram,
            automated_dms_per_hour=sc.dm_cap,
            private_replies_per_hour=sc.pr_cap,
        )
    )
    app = create_app(config, clock=clock, profile=profile, start_workers=False)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        with queue_order(order):
            return await play(app, sim, clock, sc, order)
    finally:
        await runner.cleanup()
        await sim_runner.cleanup()
        await sim.close()


async def play(
    app: web.Application, sim: Simulator, clock: VirtualClock, sc: Scenario, order: QueueOrder
) -> Result:
    """Move the clock from one user action or sender wake to the next until all is settled."""
    rt = app[RUNTIME]
    assert rt.db is not None and rt.worker is not None and rt.dispatcher is not None
    assert rt.engine is not None
    assert rt.inbox_db is not None
    db, inbox_db, worker, dispatcher = rt.db, rt.inbox_db, rt.worker, rt.dispatcher
    rng = random.Random(sc.seed)
    actions = Actions()
    persona: dict[str, str] = {}  # user id -> name
    for i in range(sc.comments):
        at = START + sc.viral * rng.random()
        text = "GUIDE please" if rng.random() < sc.guide_share else "PRICING please"
        actions.add(at, "comment", f"c{i}", media=f"reel{rng.randrange(3)}", text=text)
    menu_total = int(sc.menu_per_hour * 24 * sc.menu_days)
    for i in range(menu_total):
        at = START + timedelta(days=sc.menu_days) * rng.random()
        actions.add(at, "dm", f"m{i}", text="menu")

    result = Result(order)
    seen_send = 0
    started = shown = time.monotonic()
    wake: datetime | None = START
    while True:
        nexts = [t for t in (actions.next_at(), wake) if t is not None]
        if not nexts:
            break
        at = max(min(nexts), clock.now())
        if at > START + sc.horizon:
            break
        if at == clock.now() and result.ticks and wake is not None and wake <= at:
            at = at + timedelta(milliseconds=100)  # nothing moved: do not spin
        clock.set(at)
        bodies = []
        for action, user, kw in actions.pop_due(clock.now()):
            d = await getattr(sim.player, action)(IG_ACCOUNT, user, **kw)
            persona.setdefault(str(d.user_id), user)
            bodies.append(d.body)
        sim.deliveries.clear()
        if bodies:
            async with inbox_db.transaction() as conn:
                await conn.executemany(
                    "INSERT INTO inbox (received_at, body) VALUES (?, ?)",
                    [(to_ms(clock.now()), b) for b in bodies],
                )
        await worker.drain()
        wake = await dispatcher.tick()
        result.ticks += 1
        if time.monotonic() - shown > 30:
            shown = time.monotonic()
            print(
                f"  {order}: {clock.now() - START} virtual, {result.ticks:,} ticks",
                file=sys.stderr,
            )
        # What just went out decides what its recipient does next.
        async with db.reader.execute(
            "SELECT s.id, o.user_id, o.source FROM send_log s JOIN outbox o"
            " ON o.id = s.outbox_id WHERE s.id > ? AND s.outcome = 'sent' ORDER BY s.id",
            (seen_send,),
        ) as cur:
            sent = list(await cur.fetchall())
        for send_id, user_id, source in sent:
            seen_send = max(seen_send, send_id)
            react(actions, sc, persona.get(user_id, user_id), source, clock.now())
    result.seconds = time.monotonic() - started
    result.virtual_end = clock.now()
    await settle(result, db.reader)
    result.refused = len(sim.refused())
    return result


def _delay(rng: random.Random, mean: timedelta) -> timedelta:
    return timedelta(seconds=rng.expovariate(1 / mean.total_seconds()))


def react(actions: Actions, sc: Scenario, user: str, source: str | None, now: datetime) -> None:
    """A user's next move after a message from the bot reached them.

    Drawn from the user and the message alone, so both orders face the same people: whoever
    answers under EDF answers under FIFO too (when the message reaches them at all).
    """
    rng = random.Random(f"{sc.seed}:{user}:{source}")
    if source in ("pricing/dm_pricing", "lead_guide_comment/offer"):
        if rng.random() < sc.answer:
            text = "yes please" if source.startswith("lead") else "how much for a team of 5?"
            actions.add(now + _delay(rng, sc.answer_delay), "dm", user, text=text)
    elif source == "pricing/ask_optin":
        if rng.random() < sc.optin:
            actions.add(
                now + _delay(rng, timedelta(minutes=5)),
                "optin",
                user,
                kind="notification_messages",
                topic="pricing_updates",
                frequency="WEEKLY",
            )
    elif source == "lead_guide_comment/email":
        if rng.random() < sc.email:
            address = f"{user}@example.com"
            actions.add(now + _delay(rng, timedelta(minutes=20)), "dm", user, text=address)
    elif source == "dm_menu/menu" and rng.random() < sc.tap:
        actions.add(
            now + _delay(rng, timedelta(minutes=2)),
            "quick_reply",
            user,
            payload="MENU_PRICING",
            text="Pricing",
        )


async def settle(result: Result, reader: Any) -> None:
    """Each queued message's fate: delivered before its deadline, expired, or otherwise."""
    async with reader.execute(
        "SELECT o.kind, o.source, o.state, o.created_at, o.deadline, s.outcome, s.reason, s.at"
        " FROM outbox o LEFT JOIN send_log s ON s.outbox_id = o.id"
        " AND s.outcome IN ('sent', 'expired', 'dropped', 'failed', 'unknown')"
    ) as cur:
        rows = await cur.fetchall()
    for kind, source, state, created, deadline, outcome, reason, at in rows:
        cat = category(kind, source)
        if outcome == "sent":
            result.delivered[cat] += 1
            result.waits.setdefault(cat, []).append((at - created) / 3_600_000)
            if deadline is not None and at > deadline:
                result.late_sends += 1
        elif outcome == "expired":
            result.expired[cat] += 1
        else:
            result.other[f"{cat}: {outcome or state} {reason or ''}".strip()] += 1


def report(results: list[Result], sc: Scenario) -> None:
    cats = sorted({c for r in results for c in (*r.delivered, *r.expired)})
    print(
        f"viral hour: {sc.comments:,} comments in {sc.viral}, caps {sc.pr_cap} private replies"
        f" and {sc.dm_cap} DMs per hour, {int(sc.menu_per_hour * 24 * sc.menu_days):,}"
        f" menu DMs over {sc.menu_days:g} days"
    )
    for r in results:
        print(
            f"\n{r.order.upper()}: {r.seconds:.0f} s wall, {r.ticks:,} ticks,"
            f" settled by {r.virtual_end - START} virtual"
        )
        print(f"  {'':18} {'delivered':>10} {'expired':>9}   wait to send: median, p90")
        for c in cats:
            w = sorted(r.waits.get(c, [0.0]))
            median, p90 = w[len(w) // 2], w[int(len(w) * 0.9)]
            print(
                f"  {c:18} {r.delivered[c]:>10,} {r.expired[c]:>9,}"
                f"   {median:6.1f} h, {p90:5.1f} h"
            )
        print(f"  {'total':18} {r.total_delivered:>10,} {r.total_expired:>9,}")
        for what, n in r.other.most_common():
            print(f"  other: {what}: {n:,}")
        print(f"  sends after their deadline: {r.late_sends}; refused by Meta: {r.refused}")
    edf = next(r for r in results if r.order is QueueOrder.EDF)
    fifo = next(r for r in results if r.order is QueueOrder.FIFO)
    with_deadline = [c for c in cats if c != "public reply"]
    e = sum(edf.delivered[c] for c in with_deadline)
    f = sum(fifo.delivered[c] for c in with_deadline)
    print(
        f"\ndelivered before their deadline (messages with a basis, public replies aside):"
        f" EDF {e:,}, FIFO {f:,}, ratio EDF/FIFO {e / f if f else math.inf:.3f}"
    )
    print(
        json.dumps(
            {
                "comments": sc.comments,
                "edf": e,
                "fifo": f,
                "ratio": round(e / f, 3) if f else None,
                "edf_expired": edf.total_expired,
                "fifo_expired": fifo.total_expired,
            }
        )
    )


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="comments and caps x SCALE")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--order",
        choices=["both", "edf", "fifo"],
        default="both",
        help="both (default): one after the other in this process",
    )
    parser.add_argument(
        "--parallel", action="store_true", help="run EDF and FIFO as two processes at once"
    )
    parser.add_argument("--save", type=Path, help="write this order's result as JSON here")
    parser.add_argument("--keep", type=Path, help="keep the SQLite files in this folder")
    args = parser.parse_args()
    sc = replace(Scenario(), seed=args.seed).scaled(args.scale)
    if args.parallel:
        results = await in_parallel(args)
    else:
        orders = list(QueueOrder) if args.order == "both" else [QueueOrder(args.order)]
        results = []
        with tempfile.TemporaryDirectory(prefix="burst-") as tmp:
            workdir = args.keep or Path(tmp)
            workdir.mkdir(parents=True, exist_ok=True)
            for order in orders:
                results.append(await run(order, sc, workdir))
                print(f"{order}: done in {results[-1].seconds:.0f} s", file=sys.stderr)
    if args.save and len(results) == 1:
        args.save.write_text(json.dumps(results[0].to_json()))
    if len(results) == 2:
        report(results, sc)
    return 0


async def in_parallel(args: argparse.Namespace) -> list[Result]:
    """This script twice, one order each, on the machine's two cores."""
    with tempfile.TemporaryDirectory(prefix="burst-") as tmp:
        procs = []
        for order in QueueOrder:
            cmd = [sys.argv[0], "--scale", str(args.scale), "--seed", str(args.seed)]
            cmd += ["--order", order.value, "--save", str(Path(tmp) / f"{order}.json")]
            procs.append(await asyncio.create_subprocess_exec(sys.executable, *cmd))
        for proc in procs:
            if await proc.wait() != 0:
                raise SystemExit(f"a child run failed: {proc.returncode}")
        return [
            Result.from_json(json.loads((Path(tmp) / f"{o}.json").read_text())) for o in QueueOrder
        ]


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
