"""Plays a scenario against the real bot: its app (webhook -> inbox -> engine -> outbox ->
sender) and the Graph API simulator, on one `VirtualClock` that jumps from one due time to the
next.

The two talk in process by default: the bot's Graph client calls the simulator's `answer` and
signed deliveries go to the webhook's `accept`, the functions their HTTP handlers call. With
`http=True` they talk over loopback HTTP instead, as the daemon does; the report is the same
(tests/test_simulate.py compares them), and the run takes longer.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from bot.clock import SystemClock, VirtualClock, from_ms, to_ms
from bot.config import Config, config_from_mapping
from bot.policy import HUMAN_AGENT_TAG, Author, Content, Intent, Refused, decide, set_handoff
from bot.simulate.errors import ScenarioError
from bot.simulate.report import Report, check_expectations
from bot.simulate.scenario import BUSINESS_ACTIONS, OPTIN_KINDS, Action, Scenario
from bot.simulate.timeline import Timeline, TimelineLine
from bot.simulator import Delivered, Simulator, SimulatorError, create_simulator_app
from bot.simulator.local import LocalTransport
from bot.simulator.payloads import encode, sign
from bot.store.conversations import load_state, save_state
from bot.store.db import fetch_all
from bot.store.outbox import Outcome, SendKind, enqueue, log_send
from bot.webhook import accept

if TYPE_CHECKING:
    from bot.app import Runtime

__all__ = ["play_user_action", "run_scenario"]

APP_SECRET = "simulate-app-secret"  # not a secret: both ends run in this process
# Meta batches up to 1000 changes per webhook POST (POLICY.md §2); so does the runner.
MAX_ENTRIES_PER_POST = 1000

# One signed delivery (body, X-Hub-Signature-256) to the bot's webhook; the HTTP status.
Deliver = Callable[[bytes, str], Awaitable[int]]


@dataclass(slots=True)
class _World:
    """The two apps and what the runner needs of them."""

    clock: VirtualClock
    sim: Simulator
    config: Config
    deliver: Deliver


async def _start(app: web.Application) -> web.AppRunner:
    """The app's start-up (store, workers); in process, no server is needed."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    try:
        await runner.setup()  # the bot's app checks its flows here
    except BaseException:
        await runner.cleanup()  # close what started (the database), or the process hangs
        raise
    return runner


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = await _start(app)
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
    except BaseException:
        await runner.cleanup()
        raise
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


def _http_deliver(session: aiohttp.ClientSession, url: str) -> Deliver:
    async def deliver(body: bytes, signature: str) -> int:
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": signature}
        async with session.post(url, data=body, headers=headers) as r:
            await r.read()
            return r.status

    return deliver


def _local_deliver(app: web.Application) -> Deliver:
    async def deliver(body: bytes, signature: str) -> int:
        return (await accept(app, body, signature)).status

    return deliver


class _Runner:
    """Plays the scenario against the running bot and collects what happened."""

    def __init__(self, scenario: Scenario, world: _World, rt: Runtime) -> None:
        assert rt.db and rt.worker and rt.dispatcher and rt.sender, "the app's workers run"
        self.s = scenario
        self.w = world
        self.profile = rt.profile
        self.db = rt.db
        self.worker = rt.worker
        self.dispatcher = rt.dispatcher
        self.sender = rt.sender
        self.timeline = Timeline(scenario.accounts)
        self._seen_log = 0
        self._held: list[dict[str, Any]] = []  # echoes, delivered with the next actions
        self._pending: list[dict[str, Any]] = []  # user actions played, not yet delivered
        self._ticked: datetime | None = None  # when the dispatcher last ran

    # -- the loop ------------------------------------------------------------------------

    async def run(self, resolution: timedelta = timedelta(0)) -> None:
        """Jump from one due time to the next: the next action, the bot's next wake, the end.

        Each user action is played at its own time (the simulator's model and the webhook's
        timestamps are exact); with a `resolution`, what was played is delivered to the bot
        at most once per that much virtual time, as Meta's batched webhooks arrive, so big
        scenarios run in fewer, larger steps. The bot's own timers are always kept exactly.
        """
        clock, actions, end = self.w.clock, self.s.actions, self.s.end
        i = 0
        again = 0  # ticks in a row at one instant
        deliver_from = clock.now()  # no delivery before this (last delivery + resolution)
        wake: datetime | None = None
        fresh = True  # the bot's state may have changed since `wake` was read
        target = clock.now()
        while True:
            while i < len(actions) and actions[i].at <= target:
                a = actions[i]
                i += 1
                if a.at > clock.now():
                    clock.set(a.at)
                if a.name in BUSINESS_ACTIONS:
                    await self._deliver()  # what users did before reaches the bot first
                    await self._play_business(a)
                    fresh = True
                else:
                    await self._play_user(a)
            if target > clock.now():
                clock.set(target)
            now = clock.now()
            if self._pending and (now >= deliver_from or now >= end):
                await self._deliver()
                deliver_from = now + resolution
                fresh = True
            if fresh:
                wake = await self._next_due(self._ticked)
                fresh = False
            if wake is not None and wake <= now:
                wake = await self.dispatcher.tick()
                self._ticked = now
                await self._echoes()
            if now >= end and i >= len(actions):
                await self._deliver(echoes=True)
                return
            if wake is not None and wake <= now:
                # Due again at this instant (a cap freed a slot, more runs than one tick
                # takes): tick again. A wake that stays in the past is stale work the bot
                # does not clear: go on to the next time something else is due.
                again += 1
                if again < 3:
                    target = now
                    continue
                later = [self.sender.next_wake, await self._next_due(now, outbox=False)]
                wake = min((t for t in later if t is not None and t > now), default=None)
            again = 0
            candidates = [end]
            if i < len(actions):
                candidates.append(actions[i].at)
            if self._pending:
                candidates.append(max(deliver_from, now))
            if wake is not None:
                candidates.append(wake)
            sleeper = clock.next_wake()
            if sleeper is not None and sleeper > now:
                candidates.append(sleeper)
            target = min(candidates)

    async def _next_due(self, ticked: datetime | None, *, outbox: bool = True) -> datetime | None:
        """When the dispatcher next has work, in one query instead of a tick's thirty SQLite
        round trips: a queued send, or a flow run due after the last tick (one due before it
        was offered to that tick already)."""
        after = -1 if ticked is None else to_ms(ticked)
        sql = "SELECT min(due_at) FROM flow_runs WHERE due_at >= ?"
        args: list[Any] = [after]
        if outbox:
            # Each min() one lookup in an outbox index (outbox_pending_kind per account and
            # kind, outbox_pending_deadline); a min() over all pending rows read every one.
            for account in self.s.accounts:
                for kind in SendKind:
                    sql += (
                        " UNION ALL SELECT min(due_at) FROM outbox WHERE state = 'pending'"
                        " AND account_id = ? AND kind = ?"
                    )
                    args += [account.id, kind.value]
            sql += (
                " UNION ALL SELECT min(deadline) FROM outbox WHERE state = 'pending'"
                " AND deadline IS NOT NULL"
            )
        rows = await fetch_all(self.db.reader, sql, args)
        times = [row[0] for row in rows if row[0] is not None]
        return from_ms(min(times)) if times else None

    # -- user actions: Meta's side, delivered as signed, batched webhooks ------------------

    def _uid(self, name: str) -> str:
        uid = self.w.sim.user_id(name)
        self.timeline.names.setdefault(uid, name)
        return uid

    async def _play_user(self, a: Action) -> None:
        """The user acts now: the simulator records it; its webhook waits for `_deliver`."""
        self.timeline.record_action(a)
        try:
            d = await self._player_call(a)
        except (SimulatorError, ValueError) as exc:
            raise ScenarioError(
                f"{self.s.path}:{a.line}: error: {a.where}.{a.name}: {exc}"
            ) from None
        if d is not None:
            self._pending.append(d.payload)

    async def _deliver(self, *, echoes: bool = False) -> None:
        """Deliver what users did, with the echoes held since, in as few signed POSTs as Meta
        would use; then let the bot process them. Echoes alone wait: they change no window."""
        if not self._pending and not (echoes and self._held):
            return
        payloads = self._held + self._pending
        self._held, self._pending = [], []
        await self._post(payloads)
        await self.worker.drain()

    async def _player_call(self, a: Action) -> Delivered | None:
        if a.user is not None:
            self._uid(a.user)
        return await play_user_action(self.w.sim, a)

    async def _post(self, payloads: Iterable[Mapping[str, Any]]) -> None:
        """Signed deliveries to the bot's webhook, entries batched per object like Meta does."""
        by_object: dict[str, list[Any]] = {}
        for payload in payloads:
            by_object.setdefault(str(payload["object"]), []).extend(payload["entry"])
        for obj, entries in by_object.items():
            for k in range(0, len(entries), MAX_ENTRIES_PER_POST):
                body = encode({"object": obj, "entry": entries[k : k + MAX_ENTRIES_PER_POST]})
                status = await self.w.deliver(body, sign(APP_SECRET, body))
                if status != 200:
                    raise ScenarioError(f"the bot's webhook answered {status} to a delivery")

    async def _echoes(self) -> None:
        """Hold what Meta sends back after each accepted send, message echoes and the
        account's own comments (POLICY.md §2), for the next step's delivery: they change no
        window, so one POST per step serves them all."""
        sim = self.w.sim
        new = sim.log.entries[self._seen_log :]
        self._seen_log = len(sim.log.entries)
        for e in new:
            if not e.accepted or not e.message_id:
                continue
            if e.endpoint == "messages" and e.user_id:
                message = e.body.get("message")
                msg = message if isinstance(message, dict) else {}
                d = await sim.player.echo(e.account_id, e.user_id, e.message_id, msg)
                self._held.append(d.payload)
            elif e.endpoint in ("replies", "comments") and e.message_id in sim.model.comments:
                comment = sim.model.comments[e.message_id]
                self._held.append((await sim.player.own_comment(e.account_id, comment)).payload)

    # -- the business side: a human agent or an operator, through the bot's own outbox ----

    async def _play_business(self, a: Action) -> None:
        self.timeline.record_action(a)
        assert a.user is not None
        uid = self._uid(a.user)
        account = self.w.config.account(a.account.id)
        assert account is not None
        now = self.w.clock.now()
        db = self.db
        async with db.transaction() as conn:
            state = await load_state(conn, account.id, uid, account.platform)
            if a.name in ("handoff", "release"):
                new = set_handoff(state, now if a.name == "handoff" else None)
                await save_state(conn, account.id, uid, new, now)
                return
            intent = self._intent(a)
            decision = decide(state, intent, now, self.profile)
            source = f"scenario/{a.name}"
            if isinstance(decision, Refused):
                # As the engine does for a flow's send the policy refuses when queued.
                await log_send(
                    conn,
                    at=now,
                    outcome=Outcome.DROPPED,
                    account_id=account.id,
                    user_id=uid,
                    kind=SendKind.MESSAGE,
                    reason=str(decision.reason),
                    detail=f"{source}: {decision.detail}",
                )
                return
            await enqueue(
                conn,
                account_id=account.id,
                user_id=uid,
                kind=SendKind.MESSAGE,
                intent=intent,
                message={"text": a.args["text"]},
                due_at=now,
                deadline=decision.until,
                now=now,
                source=source,
            )

    @staticmethod
    def _intent(a: Action) -> Intent:
        if a.name == "agent_reply":
            # A human's support answer may use HUMAN_AGENT up to 7 days on (POLICY.md §1);
            # `author: automation` shows the same words refused when a bot writes them.
            author = Author(a.args.get("author", "human"))
            return Intent(author=author, content=Content.SUPPORT, tag=HUMAN_AGENT_TAG)
        content = Content(a.args.get("content", Content.PROMOTIONAL.value))
        kind = a.args.get("kind")
        if kind is None:
            return Intent(content=content, topic=a.args["topic"])
        return Intent(content=content, topic=a.args["topic"], via_token=OPTIN_KINDS[kind])

    # -- collecting what happened -----------------------------------------------------------

    async def collect(self, notes: bool) -> list[TimelineLine]:
        """The timeline: actions as played, the bot's send log and notes, Meta's refusals."""
        return await self.timeline.collect(self.db.reader, self.w.sim.log.entries, notes)


async def play_user_action(sim: Simulator, a: Action) -> Delivered | None:
    """Play one user action of a scenario on the simulator (its webhook is the caller's to
    deliver); the daemon test plays scenarios with it too."""
    p = sim.player
    acct = a.account.id
    g = a.args.get
    user = a.user or ""
    if a.name == "comment":
        return await p.comment(
            acct, user, g("media", "reel1"), a.args["text"], username=g("username")
        )
    if a.name == "live_comment":
        return await p.live_comment(acct, user, g("media", "live1"), a.args["text"])
    if a.name == "live_stop":
        sim.live_stop(acct, g("media", "live1"))
        return None
    if a.name == "dm":
        return await p.dm(acct, user, a.args["text"])
    if a.name == "story_reply":
        return await p.story_reply(acct, user, g("story", "story1"), a.args["text"])
    if a.name == "story_mention":
        return await p.story_mention(acct, user, g("url", "https://cdn.example/story.jpg"))
    if a.name == "quick_reply":
        payload = a.args["payload"]
        return await p.quick_reply(acct, user, payload, g("text", payload))
    if a.name == "postback":
        payload = a.args["payload"]
        return await p.postback(acct, user, payload, g("title", payload))
    if a.name == "referral":
        return await p.referral(acct, user, a.args["ref"], source=g("source"))
    if a.name == "optin":
        kind = OPTIN_KINDS[g("kind", "marketing")]
        freq = g("frequency")
        return await p.optin(
            acct,
            user,
            kind.value,
            a.args["topic"],
            freq.upper() if freq else None,
            title=g("title"),
        )
    if a.name == "stop":
        return await p.stop(acct, user, a.args["topic"])
    if a.name == "resume":
        return await p.resume(acct, user, a.args["topic"])
    raise AssertionError(f"no player call for {a.name}")


async def run_scenario(
    scenario: Scenario,
    data_dir: Path,
    *,
    notes: bool = False,
    resolution: timedelta | None = None,
    http: bool = False,
) -> Report:
    """Run the scenario with its SQLite file in `data_dir`; the report says what happened.

    `resolution` overrides the scenario's (see `_Runner.run`); `http` plays over loopback
    HTTP instead of in process (see the module's docstring).
    """
    from bot.app import RUNTIME, create_app

    wall = SystemClock()  # only to report how long the run took
    started = wall.monotonic()
    clock = VirtualClock(scenario.start)
    accounts = [(a.id, a.platform.value, f"token-{a.id}") for a in scenario.accounts]
    # Echoes and the account's own comments are delivered by the runner, batched per instant.
    sim = Simulator(
        clock,
        accounts,
        APP_SECRET,
        None,
        seed=scenario.seed,
        echoes=False,
        own_comment_webhooks=False,
    )
    runners: list[web.AppRunner] = []
    session = aiohttp.ClientSession() if http else None
    try:
        sim_url = "http://simulator.invalid"  # in process, the URL only names the endpoint
        if http:
            sim_runner, sim_url = await _serve(create_simulator_app(sim))
            runners.append(sim_runner)
        config = config_from_mapping(
            {
                "app_secret": APP_SECRET,
                "verify_token": "simulate-verify-token",
                "database": {"path": str(data_dir / "simulate.sqlite3")},
                "flows_dir": str(scenario.flows_dir),
                "templates_dir": str(scenario.templates_dir),
                "accounts": [
                    {
                        "id": a.id,
                        "platform": a.platform.value,
                        "name": a.name,
                        "token": f"token-{a.id}",
                        "graph_base_url": sim_url,
                    }
                    for a in scenario.accounts
                ],
            },
            env={},
            source=str(scenario.path),
        )
        app = create_app(
            config,
            clock=clock,
            profile=scenario.profile,
            start_workers=False,
            rng=random.Random(scenario.seed),
            throwaway_store=True,
            graph_transport=None if http else LocalTransport(sim),
        )
        if session is not None:
            bot_runner, bot_url = await _serve(app)
            deliver = _http_deliver(session, f"{bot_url}{config.webhook_path}")
        else:
            bot_runner = await _start(app)
            deliver = _local_deliver(app)
        runners.append(bot_runner)
        runner = _Runner(scenario, _World(clock, sim, config, deliver), app[RUNTIME])
        await runner.run(scenario.resolution if resolution is None else resolution)
        lines = await runner.collect(notes)
    finally:
        for r in reversed(runners):
            await r.cleanup()
        if session is not None:
            await session.close()
        await sim.close()
    results = check_expectations(scenario.expectations, lines)
    return Report(scenario, tuple(lines), results, wall.monotonic() - started)
