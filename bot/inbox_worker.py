"""Turns stored deliveries into events for the engine, exactly once each.

Per batch, one transaction: events are de-duplicated against every event ever seen and handed
to the engine in per-contact timestamp order. A crash anywhere inside rolls all of it back, so
the batch is simply done again after a restart. The deliveries are then marked processed in the
inbox file (bot/store/inbox.py says why that needs no shared transaction). A delivery that
can't be processed is kept as `bad` with the reason, never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import aiosqlite

from bot.clock import Clock, to_ms
from bot.delivery import MalformedDelivery, ParsedDelivery, contact_order, parse_delivery
from bot.events import Event, Unknown
from bot.metrics import Metrics
from bot.store.db import Database, fetch_all
from bot.store.inbox import InboxRow, claim_new, mark_processed

__all__ = ["EventSink", "InboxWorker"]

log = logging.getLogger(__name__)


class EventSink(Protocol):
    async def handle(self, conn: aiosqlite.Connection, events: Sequence[Event]) -> None:
        """Apply events (new, in contact order) inside the caller's transaction."""


class InboxWorker:
    def __init__(
        self,
        db: Database,
        inbox: Database,
        clock: Clock,
        sink: EventSink,
        metrics: Metrics,
        *,
        wake: asyncio.Event | None = None,
        ingest_busy: Callable[[], bool] = lambda: False,
        ingest_flooded: Callable[[], bool] = lambda: False,
        on_commit: Callable[[], None] = lambda: None,
        batch: int = 32,
        poll_seconds: float = 1.0,
        busy_share: float = 0.25,
        flood_share: float = 0.1,
        busy_hold: float = 0.004,
        max_yield: float = 0.5,
    ) -> None:
        self._db = db
        self._inbox = inbox
        self._clock = clock
        self._sink = sink
        self._metrics = metrics
        self._wake = wake or asyncio.Event()
        self._batch = batch
        self._poll = poll_seconds
        self._stopping = False
        self._ingest_busy = ingest_busy
        self._ingest_flooded = ingest_flooded
        self._busy_share = busy_share
        self._flood_share = flood_share
        self._busy_hold = busy_hold
        self._max_yield = max_yield
        self._on_commit = on_commit
        self._size = batch  # deliveries per transaction now; smaller while webhooks pour in

    def stop(self) -> None:
        """Finish the batch under way, then return from `run` (never cancel mid-batch)."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping:
            started = self._clock.monotonic()
            if n := await self.process_once(self._size):
                spent = self._clock.monotonic() - started
                if self._ingest_busy():
                    # Acks come first (Meta wants a 200 within seconds, and an ack is what
                    # makes a delivery safe). A webhook waits for the store while a batch
                    # holds it, so batches shrink until one holds it about `busy_hold`, and
                    # the worker takes at most `busy_share` of the loop, catching up when
                    # webhooks ease; `flood_share` while acks queue up by the dozen, a rate
                    # no worker keeps up with anyway (bench/ingest.py measures both sides).
                    per = spent / n
                    self._size = max(1, min(self._batch, int(self._busy_hold / per) or 1))
                    share = self._flood_share if self._ingest_flooded() else self._busy_share
                    # At most `max_yield`: one batch stalled for seconds (a slow disk, a paused
                    # VM or process) must not idle the worker ten times as long after it.
                    await asyncio.sleep(min(spent * (1 - share) / share, self._max_yield))
                else:
                    self._size = self._batch
                continue
            self._wake.clear()
            if self._stopping:
                return
            # A real-time poll only as a fallback for rows written by another process;
            # normally the inbox writer's commit event wakes this at once.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)

    async def drain(self, until: float | None = None) -> int:
        """Process until the inbox is empty, or until the clock's monotonic time `until`
        (shutdown: a flood's backlog takes minutes, and what is left is safe in the inbox)."""
        total = 0
        while until is None or self._clock.monotonic() < until:
            if not (n := await self.process_once()):
                break
            total += n
        return total

    async def process_once(self, limit: int | None = None) -> int:
        rows = await claim_new(self._inbox, limit or self._batch)
        if not rows:
            return 0
        parsed = [(row, _parse(row)) for row in rows]
        try:
            await self._commit(parsed)
        except Exception:
            log.exception("a batch of %d deliveries failed; retrying one by one", len(rows))
            for one in parsed:
                try:
                    await self._commit([one])
                except Exception as exc:
                    await self._quarantine(one[0], f"processing failed: {exc!r}")
        return len(rows)

    async def _commit(self, parsed: list[tuple[InboxRow, ParsedDelivery | str]]) -> None:
        now_ms = to_ms(self._clock.now())
        results: list[tuple[int, int, str | None]] = []  # (inbox id, new events, error)
        candidates: list[tuple[int, Event]] = []
        for row, result in parsed:
            if isinstance(result, str):
                log.warning("delivery %d kept as bad: %s", row.id, result)
                self._metrics.inc("deliveries_bad", help="signed deliveries that didn't parse")
                results.append((row.id, 0, result))
                continue
            for problem in result.problems:
                log.info("delivery %d: %s", row.id, problem)
            candidates.extend((row.id, ev) for ev in result.events)
        async with self._db.transaction() as conn:
            fresh = await _first_seen(conn, candidates)
            dupes = len(candidates) - len(fresh)
            if dupes:
                self._metrics.inc("events_duplicate", dupes, help="events Meta sent again")
            counts: dict[int, int] = {}
            for inbox_id, ev in fresh:
                counts[inbox_id] = counts.get(inbox_id, 0) + 1
                self._metrics.inc("events", kind=type(ev).__name__.lower(), help="new events")
                if isinstance(ev, Unknown):
                    log.info("ignored %s event: %s", ev.field or "unknown", ev.reason)
            results.extend(
                (row.id, counts.get(row.id, 0), None)
                for row, result in parsed
                if not isinstance(result, str)
            )
            if fresh:
                await self._sink.handle(conn, contact_order(ev for _, ev in fresh))
        # After the commit, in the inbox file: a crash in between only means reading these
        # deliveries again, and every event of them is then a duplicate.
        await mark_processed(self._inbox, results, at_ms=now_ms)
        self._on_commit()

    async def _quarantine(self, row: InboxRow, reason: str) -> None:
        self._metrics.inc("deliveries_bad", help="signed deliveries that didn't parse")
        await mark_processed(self._inbox, [(row.id, 0, reason)], at_ms=to_ms(self._clock.now()))


def _parse(row: InboxRow) -> ParsedDelivery | str:
    try:
        return parse_delivery(row.body)
    except MalformedDelivery as exc:
        return str(exc)


async def _first_seen(
    conn: aiosqlite.Connection, events: Sequence[tuple[int, Event]]
) -> list[tuple[int, Event]]:
    """The events never seen before (in this batch or any earlier), recorded as seen."""
    new: dict[tuple[str, str], tuple[int, Event]] = {}
    for inbox_id, ev in events:
        new.setdefault((ev.account_id, ev.key), (inbox_id, ev))
    keys = list(new)
    for i in range(0, len(keys), 400):
        chunk = keys[i : i + 400]
        values = ",".join("(?, ?)" for _ in chunk)
        # One primary-key lookup per key; `(account_id, key) IN (VALUES ...)` of two or more
        # keys scanned every event ever seen, every batch.
        for account_id, key in await fetch_all(
            conn,
            f"SELECT e.account_id, e.key FROM (VALUES {values}) AS k"
            " CROSS JOIN events AS e ON e.account_id = k.column1 AND e.key = k.column2",
            [x for k in chunk for x in k],
        ):
            new.pop((account_id, key), None)
    await conn.executemany(
        "INSERT INTO events (account_id, key, user_id, kind, at, inbox_id)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [
            (ev.account_id, ev.key, ev.user_id, type(ev).__name__, to_ms(ev.timestamp), inbox_id)
            for inbox_id, ev in new.values()
        ],
    )
    return list(new.values())
