"""The aiohttp app factory: every resource is owned by `cleanup_ctx` and closed in reverse.

Shutdown order matters for "nothing lost": stop accepting webhooks (the runner does that
first), commit what the inbox writer holds, let the worker finish its batch, then close the
database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial

from aiohttp import web

from bot.clock import Clock, SystemClock, to_ms
from bot.config import Config
from bot.config import reload_secrets as reread_secrets
from bot.dispatch import Dispatcher
from bot.engine import Engine
from bot.errors import ConfigError
from bot.flowreload import FlowReloader, FlowWatcher
from bot.flows.flowset import FlowSet
from bot.flows.loader import load_flowset
from bot.graph import GraphClient, Transport, new_session
from bot.inbox_worker import InboxWorker
from bot.metrics import Metrics
from bot.policy import PolicyProfile, load_profile
from bot.rootfiles import files_under
from bot.scheduler import ClockWakeup, SchedulerWakeup, Wakeup
from bot.sender import Sender
from bot.store.db import Database
from bot.store.files import open_store
from bot.store.inbox import InboxWriter, inbox_backlog, prune_processed
from bot.webhook import INBOX, METRICS, WEBHOOK, Signer, WebhookSettings, add_routes

__all__ = [
    "RUNTIME",
    "Runtime",
    "create_app",
    "on_sighup",
    "reload_flows",
    "reload_secrets",
    "watch_flows",
]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Runtime:
    """What the running daemon holds; tests reach it through `app[RUNTIME]`."""

    config: Config
    clock: Clock
    profile: PolicyProfile
    metrics: Metrics
    db: Database | None = None
    inbox_db: Database | None = None
    inbox: InboxWriter | None = None
    worker: InboxWorker | None = None
    engine: Engine | None = None
    graph: GraphClient | None = None
    sender: Sender | None = None
    dispatcher: Dispatcher | None = None
    wakeup: Wakeup | None = None
    reloader: FlowReloader | None = None
    watcher: FlowWatcher | None = None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    dead: list[str] = field(default_factory=list)
    webhook: WebhookSettings | None = None
    # One-off work started from a signal handler, kept until it ends (asyncio holds tasks
    # weakly: one nobody holds may vanish before it runs).
    background: set[asyncio.Future[bool]] = field(default_factory=set)


RUNTIME = web.AppKey("runtime", Runtime)


def create_app(
    config: Config,
    *,
    clock: Clock | None = None,
    profile: PolicyProfile | None = None,
    start_workers: bool = True,
    rng: random.Random | None = None,
    throwaway_store: bool = False,
    graph_transport: Transport | None = None,
    accept_new_database: bool = False,
) -> web.Application:
    """Build the daemon's app; `start_workers=False` leaves draining to the caller (tests).

    `rng` draws the retry jitter; `bot simulate` seeds it so a scenario with faults replays.
    `throwaway_store` is `bot simulate`'s: a temporary file nobody keeps through a crash, so
    the main file too runs on the loop (no thread hops) with `synchronous=OFF`. Never for the
    daemon's main file, whose engine transactions acks must not wait behind; its inbox file
    runs on the loop unless FULL (bot/store/db.py). `graph_transport` replaces HTTP to the
    Graph API (`bot simulate` calls its simulator in process). `accept_new_database` is
    `bot run --accept-new-database`: start on files that lost their history or partner.
    """
    clock = clock or SystemClock()
    if profile is None:
        profile = load_profile(config.policy_profile) if config.policy_profile else PolicyProfile()
    metrics = Metrics()
    rt = Runtime(config=config, clock=clock, profile=profile, metrics=metrics)

    app = web.Application(client_max_size=config.max_body_bytes)
    app[RUNTIME] = rt
    app[METRICS] = metrics
    app[WEBHOOK] = rt.webhook = WebhookSettings(
        signer=Signer(config.app_secret.encode()),
        verify_token=config.verify_token,
        path=config.webhook_path,
    )

    async def store(app: web.Application) -> AsyncIterator[None]:
        path = config.database.path
        sync = "OFF" if throwaway_store else config.database.synchronous
        # Checked first (damage, permissions, a main file that lost its history): a file
        # that can't be used stops the start with one line (bot/store/files.py).
        rt.db, rt.inbox_db = await open_store(
            path,
            sync,
            clock=clock,
            accept_new=accept_new_database,
            main_inline=throwaway_store,
            # Inline unless FULL: see bot/store/db.py (measured in docs/benchmarks.md).
            inbox_inline=sync != "FULL",
        )
        rt.inbox = InboxWriter(rt.inbox_db, clock, metrics=metrics)
        rt.inbox.start()
        app[INBOX] = rt.inbox
        log.info("store ready: %s (synchronous=%s)", path, sync)
        yield
        await rt.inbox.close()
        await rt.inbox_db.close()
        await rt.db.close()

    async def http(app: web.Application) -> AsyncIterator[None]:
        async with new_session() as session:
            rt.graph = GraphClient(graph_transport or session, clock=clock)
            yield

    async def workers(app: web.Application) -> AsyncIterator[None]:
        assert rt.db and rt.inbox_db and rt.inbox and rt.graph
        aps = SchedulerWakeup(clock) if isinstance(clock, SystemClock) else None
        rt.wakeup = aps or ClockWakeup(clock)
        rt.engine = Engine(rt.db, clock, profile, metrics, config, load_flows(config, profile))
        rt.worker = InboxWorker(
            rt.db,
            rt.inbox_db,
            clock,
            rt.engine,
            metrics,
            wake=rt.inbox.committed,
            head=lambda: rt.inbox.last_id if rt.inbox else 0,
            ingest_busy=rt.inbox.busy,
            ingest_flooded=rt.inbox.flooded,
            on_commit=rt.wakeup.kick,
        )
        rt.sender = Sender(
            rt.db,
            clock,
            rt.graph,
            profile,
            config,
            metrics,
            rng=rng,
            before_send=rt.worker.settle_contact,
            on_resume=partial(reload_secrets, rt),
        )
        rt.dispatcher = Dispatcher(rt.engine, rt.sender)
        rt.reloader = FlowReloader(
            lambda: load_flows(config, profile), partial(_install, rt), partial(_failed, rt)
        )
        rt.watcher = FlowWatcher(partial(_flow_files_stamp, config), lambda: reload_flows(rt))
        stopping = rt.stopping
        if start_workers:
            if aps is not None:
                aps.start()
            await rt.sender.recover()
            _spawn(rt, rt.worker.run(), "inbox-worker")
            _spawn(rt, _dispatch(rt.dispatcher, rt.wakeup, stopping), "dispatcher")
            watch_flows(rt)
            if config.database.inbox_keep_days:
                _spawn(rt, _prune_inbox(rt, stopping), "inbox-pruner")
        yield
        # The whole stop counts against the drain's time, in-flight sends included.
        deadline = clock.monotonic() + config.shutdown_drain_seconds
        rt.worker.stop()
        rt.sender.stop(deadline)  # no send after the deadline; a call in flight then ends
        stopping.set()
        rt.wakeup.kick()
        if aps is not None:
            aps.shutdown()
        for task in list(rt.tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await rt.reloader.close()
        # What the webhook stored before shutdown is processed now, for as long as the
        # supervisor allows; the rest stays in the inbox, where the next start finds it.
        if start_workers:
            await rt.inbox.close()
            done = await rt.worker.drain(until=deadline)
            left = (await inbox_backlog(rt.inbox_db, to_ms(clock.now())))["new"]
            log.info(
                "processed %d stored deliveries while stopping; %s left for the next start",
                done,
                left,
            )

    app.cleanup_ctx.extend([store, http, workers])
    add_routes(app, config.webhook_path)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    return app


def load_flows(config: Config, profile: PolicyProfile) -> FlowSet | None:
    """The checked flows, or None when there is no flows folder (the bot then only records).

    Invalid flows stop start-up with every problem listed, as `bot check` prints them.
    """
    if not config.flows_dir.is_dir():
        log.warning(
            "no flows folder at %s: events are recorded, nothing is sent", config.flows_dir
        )
        return None
    flowset = load_flowset(config.flows_dir, config.templates_dir, profile)
    log.info("loaded %d flows from %s", len(flowset.flows), config.flows_dir)
    return flowset


def reload_flows(rt: Runtime) -> asyncio.Future[bool]:
    """Swap in the flows as they are on disk now, checked in a thread; an invalid change keeps
    the old ones. A reload under way is followed by one more (bot/flowreload.py); the future
    ends with the last (SIGHUP ignores it, tests await it).

    Runs already under way keep working: they name their flow and step by id.
    """
    assert rt.reloader is not None
    return rt.reloader.request()


async def reload_secrets(rt: Runtime) -> bool:
    """Read every secret again (a token file replaced after Meta refused the old token) and
    use the new ones from the next call on; on SIGHUP and when `bot resume` lifts a pause.
    A file that can't be read now keeps the secrets in use (one line says why)."""
    try:
        fresh = await asyncio.to_thread(reread_secrets, rt.config)
    except ConfigError as exc:
        log.error("secrets NOT read again; the ones in use stay: %s", exc)
        return False
    changed = [a.id for a, b in zip(rt.config.accounts, fresh.accounts, strict=True) if a != b]
    rt.config = fresh
    for part in (rt.engine, rt.sender):
        if part is not None:
            part.use_config(fresh)
    if rt.webhook is not None:
        rt.webhook.signer = Signer(fresh.app_secret.encode())
        rt.webhook.verify_token = fresh.verify_token
    log.info(
        "secrets read again; %s",
        f"new tokens for {', '.join(changed)}" if changed else "no token changed",
    )
    return True


def on_sighup(rt: Runtime) -> None:
    """SIGHUP: the flows and templates as they are on disk, and the secrets read again."""
    reload_flows(rt)
    task = asyncio.ensure_future(reload_secrets(rt))
    rt.background.add(task)
    task.add_done_callback(rt.background.discard)


def watch_flows(rt: Runtime) -> None:
    """Reload when a flow or template file changes, until the app stops."""
    assert rt.watcher is not None
    _spawn(rt, rt.watcher.run(rt.stopping), "flow-watcher")


def _install(rt: Runtime, flowset: FlowSet | None) -> None:
    assert rt.engine is not None
    rt.engine.flowset = flowset
    rt.metrics.inc("flow_reloads", result="ok", help="flow reloads")
    log.info("flows reloaded")


def _failed(rt: Runtime, exc: Exception) -> None:
    if isinstance(exc, ConfigError):
        rt.metrics.inc("flow_reloads", result="rejected", help="flow reloads")
        log.error("flows NOT reloaded; the running flows stay in force:\n%s", exc)
    else:
        rt.metrics.inc("flow_reloads", result="failed", help="flow reloads")
        log.error("flows NOT reloaded (%s); the running flows stay in force", exc, exc_info=exc)


def _flow_files_stamp(config: Config) -> tuple[tuple[str, int, int], ...]:
    """Name, mtime and size of every file the flows and templates would be read from, and
    each refused one; run in a thread, since it stats every file."""
    stamps: list[tuple[str, int, int]] = []
    folders = (
        (config.flows_dir, "the flows folder"),
        (config.templates_dir, "the templates folder"),
    )
    for folder, what in folders:
        listing = files_under(folder, what, lambda name: True)
        for found in listing.files:
            try:
                st = found.real.stat()
            except OSError:
                continue  # gone since the listing: the next round sees what replaced it
            stamps.append((str(found.path), st.st_mtime_ns, st.st_size))
        stamps.extend((f"{r.path} {r.reason}", 0, 0) for r in listing.refused)
    return tuple(sorted(stamps))


async def _sleep_unless_stopped(stopping: asyncio.Event, seconds: float) -> None:
    """Real time between a background task's rounds; a stop ends the wait at once."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)


async def prune_inbox(rt: Runtime, stopping: asyncio.Event | None = None) -> int:
    """Drop processed deliveries older than `database.inbox_keep_days` from the inbox file;
    a stop ends it between two ranges (the first prune of a long history takes seconds)."""
    assert rt.inbox_db is not None
    keep = timedelta(days=rt.config.database.inbox_keep_days)

    async def pause() -> bool:
        await asyncio.sleep(0.01)
        return stopping is None or not stopping.is_set()

    n = await prune_processed(rt.inbox_db, to_ms(rt.clock.now() - keep), pause=pause)
    if n:
        rt.metrics.inc("inbox_pruned", n, help="processed deliveries deleted after keep_days")
        log.info("deleted %d processed deliveries older than %s from the inbox", n, keep)
    return n


async def _prune_inbox(rt: Runtime, stopping: asyncio.Event, every: float = 3600.0) -> None:
    """At start and then hourly; a failure waits for the next round, never ends the task."""
    while not stopping.is_set():
        try:
            await prune_inbox(rt, stopping)
        except Exception:
            log.exception("pruning the inbox failed; trying again in an hour")
        await _sleep_unless_stopped(stopping, every)


async def _dispatch(dispatcher: Dispatcher, wakeup: Wakeup, stopping: asyncio.Event) -> None:
    """Timed work: fire due runs and send due messages, then sleep until the next due time."""
    while not stopping.is_set():
        try:
            wake = await dispatcher.tick()
        except Exception:
            # A store hiccup must not end sending for good; the rows are still in SQLite.
            log.exception("the dispatcher failed a round; trying again shortly")
            await _sleep_unless_stopped(stopping, 1.0)
            continue
        if not stopping.is_set():
            await wakeup.wait(wake)


def _spawn(rt: Runtime, coro: object, name: str) -> None:
    task: asyncio.Task[None] = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
    rt.tasks.add(task)

    def done(t: asyncio.Task[None]) -> None:
        rt.tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            rt.dead.append(name)
            log.error("background task %s died", name, exc_info=t.exception())

    task.add_done_callback(done)


async def healthz(request: web.Request) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    if rt.inbox_db is None:
        return web.json_response({"status": "starting"}, status=503)
    counts = await inbox_backlog(rt.inbox_db, to_ms(rt.clock.now()))
    status = 200 if not rt.dead else 503
    return web.json_response(
        {"status": "ok" if status == 200 else "degraded", "inbox": counts, "dead_tasks": rt.dead},
        status=status,
    )


async def metrics_page(request: web.Request) -> web.StreamResponse:
    return web.Response(text=request.app[RUNTIME].metrics.render(), content_type="text/plain")
