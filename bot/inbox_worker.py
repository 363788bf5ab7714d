"""Turns stored deliveries into applied events, exactly once each, in two steps.

Ingest: a batch of deliveries is parsed, and in one transaction of the main file every event
is recorded as seen (Meta retries and duplicates deliveries) and the new ones are queued per
contact (bot/store/events.py); then the deliveries are marked processed in the inbox file. A
crash in between only means reading them again, and every event of them is then a duplicate.
Ingest is cheap (a parse and two inserts an event), so it keeps up where the engine can't.

Apply: queued events go to the engine in per-contact timestamp order, and leave the queue in
the engine's transaction. An event the engine can't apply is set aside alone with its reason
(`bot inbox` lists it, `bot inbox replay` queues it again); the rest of its batch goes on.

`settle_contact` is what the sender calls before each send: every delivery acknowledged so far
is ingested, and that contact's queued events are applied, so a STOP or a hand-over waiting
behind minutes of backlog takes effect before the next send to that contact.

A storage error that may pass (a full disk, a locked or unreadable file) is never a verdict on
the data: the step is retried with back-off, the worker lives on, and it resumes by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Protocol

import aiosqlite

from bot.clock import Clock, from_ms, to_ms
from bot.delivery import MalformedDelivery, ParsedDelivery, contact_order, parse_delivery
from bot.errors import StoreUnavailable
from bot.events import Event, Unknown
from bot.metrics import Metrics
from bot.store.db import Database
from bot.store.events import (
    QueuedEvent,
    any_queued,
    claim_contact,
    claim_one,
    claim_queued,
    contact_has_queued,
    decode_event,
    delete_queued,
    first_seen,
    queue_events,
    set_aside,
)
from bot.store.inbox import InboxRow, claim_new, mark_processed

__all__ = ["EventSink", "InboxWorker", "is_transient"]

log = logging.getLogger(__name__)


class EventSink(Protocol):
    async def handle(self, conn: aiosqlite.Connection, events: Sequence[Event]) -> None:
        """Apply events (new, in contact order) inside the caller's transaction."""


def is_transient(exc: BaseException) -> bool:
    """A storage failure that may pass by itself: retried, never held against the data.

    SQLite reports a full disk, a locked file, an I/O error or a file it can't open as
    OperationalError; a bad value (a lone surrogate, a bug) is anything else.
    """
    return isinstance(exc, sqlite3.OperationalError | StoreUnavailable | OSError)


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
        head: Callable[[], int] = lambda: 0,
        ingest_busy: Callable[[], bool] = lambda: False,
        ingest_flooded: Callable[[], bool] = lambda: False,
        on_commit: Callable[[], None] = lambda: None,
        batch: int = 32,
        poll_seconds: float = 1.0,
        busy_share: float = 0.25,
        flood_share: float = 0.1,
        busy_hold: float = 0.004,
        max_yield: float = 0.5,
        retry_first: float = 0.1,
        retry_max: float = 30.0,
    ) -> None:
        self._db = db
        self._inbox = inbox
        self._clock = clock
        self._sink = sink
        self._metrics = metrics
        self._wake = wake or asyncio.Event()
        self._head = head
        self._batch = batch
        self._poll = poll_seconds
        self._stopping = False
        self._ingest_busy = ingest_busy
        self._ingest_flooded = ingest_flooded
        self._busy_share = busy_share
        self._flood_share = flood_share
        self._busy_hold = busy_hold
        self._max_yield = max_yield
        self._retry_first = retry_first
        self._retry_max = retry_max
        self._on_commit = on_commit
        self._size = batch  # deliveries per transaction now; smaller while webhooks pour in
        self._ingest_lock = asyncio.Lock()
        # The inbox id up to which every delivery has been ingested.
        self.ingested_id = 0
        # Whether the event queue may hold events (False once a claim found it drained). While
        # it is empty, a batch is ingested and applied in one transaction, as fast as one step
        # can be; queued only behind a backlog, where per-contact order needs the queue.
        self._queued = True
        self.failures = 0  # storage failures in a row; 0 once a step succeeds again

    def stop(self) -> None:
        """Finish the batch under way, then return from `run` (never cancel mid-batch)."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping:
            started = self._clock.monotonic()
            try:
                n = await self.step(self._size)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                await self._back_off(exc)
                continue
            if n:
                spent = self._clock.monotonic() - started
                if self._ingest_busy() and spent > 0:
                    # Acks come first (Meta wants a 200 within seconds, and an ack is what
                    # makes a delivery safe). A webhook waits for the store while a batch
                    # holds it, so batches shrink until one holds it about `busy_hold`, and
                    # the worker takes at most `busy_share` of the loop, catching up when
                    # webhooks ease; `flood_share` while acks queue up by the dozen, a rate
                    # no worker keeps up with anyway (bench/ingest.py measures both sides).
                    # A batch that took no measurable time (a virtual clock) needs no yield.
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

    async def _back_off(self, exc: BaseException) -> None:
        """Wait before the next try, doubling to `retry_max`; a stop ends the wait."""
        self.failures += 1
        delay = min(self._retry_first * 2 ** (self.failures - 1), self._retry_max)
        self._metrics.inc("worker_storage_errors", help="storage errors the worker retried")
        if self.failures == 1 or self.failures % 10 == 0:
            log.error(
                "storage error (%d in a row); nothing is lost, retrying in %.1f s: %s",
                self.failures,
                delay,
                exc,
            )
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)

    async def step(self, limit: int | None = None) -> int:
        """One batch of each step: what is acknowledged is ingested first, then applied.
        Returns deliveries plus events taken: 0 when there was nothing to do."""
        deliveries, events = await self._step(limit)
        return deliveries + events

    async def _step(self, limit: int | None) -> tuple[int, int]:
        events = await self.apply_once(limit) if self._queued else 0
        deliveries = await self.ingest_once(limit, apply=True)
        idle = not deliveries and not events and not self._queued
        # Idle: events another process queued again (`bot inbox replay`) are applied too.
        if idle and await any_queued(self._db.reader):
            self._queued = True
            events = await self.apply_once(limit)
        if self.failures:
            log.info("storage works again after %d failed tries", self.failures)
            self.failures = 0
        return deliveries, events

    async def drain(self, until: float | None = None) -> int:
        """Process until nothing is left, or until the clock's monotonic time `until`
        (shutdown: a flood's backlog takes minutes, and what is left is safe in the inbox).
        Returns the deliveries ingested."""
        total = 0
        while until is None or self._clock.monotonic() < until:
            deliveries, events = await self._step(None)
            if not deliveries and not events:
                break
            total += deliveries
        return total

    # --- ingest ----------------------------------------------------------------------------

    async def ingest_once(self, limit: int | None = None, *, apply: bool = False) -> int:
        """Parse the oldest unprocessed deliveries and queue their new events; how many.

        `apply`: if nothing is queued from before, apply them at once in the same transaction
        (the worker's own step; the sender's catch-up only queues, which is quicker)."""
        limit = limit or self._batch
        async with self._ingest_lock:
            head = self._head()
            rows = await claim_new(self._inbox, limit)
            if rows:
                parsed = [(row, _parse(row)) for row in rows]
                if not (apply and not self._queued and await self._ingest_applied(parsed)):
                    await self._ingest_isolated(parsed)
                # The oldest waiting ones come first: nothing below the last is waiting now.
                self.ingested_id = max(self.ingested_id, rows[-1].id)
            if len(rows) < limit:
                # Everything the writer had committed when this read began is ingested now.
                self.ingested_id = max(self.ingested_id, head)
            return len(rows)

    async def ingest_through(self, last_id: int) -> None:
        """Ingest until every delivery up to inbox id `last_id` is in: bounded, however many
        arrive meanwhile (a flood must not keep a send waiting for ever)."""
        while self.ingested_id < last_id:
            if not await self.ingest_once(max(self._batch, 256)):
                return

    async def _ingest_isolated(self, parsed: list[tuple[InboxRow, ParsedDelivery | str]]) -> None:
        """Ingest a batch; if it fails for a reason that won't pass (a bug, never storage),
        one delivery at a time, and the one that fails alone is kept as bad with the reason
        (`bot inbox` lists it): one delivery never holds up the ones behind it."""
        try:
            await self._ingest(parsed)
            return
        except Exception as exc:
            if is_transient(exc):
                raise
            log.error("a batch of %d deliveries failed (%r); one by one", len(parsed), exc)
        for one in parsed:
            try:
                await self._ingest([one])
            except Exception as exc:
                if is_transient(exc):
                    raise
                row = one[0]
                log.error("delivery %d kept as bad: %r", row.id, exc, exc_info=exc)
                self._metrics.inc("deliveries_bad", help="signed deliveries that didn't parse")
                await mark_processed(
                    self._inbox,
                    [(row.id, 0, f"ingest failed: {type(exc).__name__}: {exc}")],
                    at_ms=to_ms(self._clock.now()),
                )

    async def _ingest_applied(self, parsed: list[tuple[InboxRow, ParsedDelivery | str]]) -> bool:
        """Ingest and apply in one transaction; False (nothing done) if it failed for a
        reason that won't pass, so the batch goes the queued way, one bad event set aside."""
        try:
            await self._ingest(parsed, apply=True)
        except Exception as exc:
            if is_transient(exc):
                raise
            log.warning("applying a batch at once failed (%r); it goes through the queue", exc)
            return False
        self._on_commit()
        return True

    async def _ingest(
        self, parsed: list[tuple[InboxRow, ParsedDelivery | str]], *, apply: bool = False
    ) -> None:
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
            received = from_ms(row.received_at)
            candidates.extend((row.id, _no_later(ev, received)) for ev in result.events)
        async with self._db.transaction() as conn:
            fresh = await first_seen(conn, candidates)
            dupes = len(candidates) - len(fresh)
            if dupes:
                self._metrics.inc("events_duplicate", dupes, help="events Meta sent again")
            counts: dict[int, int] = {}
            usable: list[tuple[int, Event]] = []
            for inbox_id, ev in fresh:
                counts[inbox_id] = counts.get(inbox_id, 0) + 1
                self._metrics.inc("events", kind=type(ev).__name__.lower(), help="new events")
                if isinstance(ev, Unknown):
                    log.info("ignored %s event: %s", ev.field or "unknown", ev.reason)
                else:
                    usable.append((inbox_id, ev))
            if apply:
                await self._sink.handle(conn, contact_order(ev for _, ev in usable))
            elif usable:
                await queue_events(conn, usable)
                self._queued = True
        results.extend(
            (row.id, counts.get(row.id, 0), None)
            for row, result in parsed
            if not isinstance(result, str)
        )
        await mark_processed(self._inbox, results, at_ms=now_ms)

    # --- apply -----------------------------------------------------------------------------

    async def apply_once(self, limit: int | None = None) -> int:
        """Apply the oldest queued events; how many were taken (applied or set aside)."""
        limit = limit or self._batch
        batch: list[QueuedEvent] = []
        try:
            async with self._db.transaction() as conn:
                batch = await claim_queued(conn, limit)
                if batch:
                    await self._apply(conn, batch)
        except Exception as exc:
            if is_transient(exc):
                raise
            log.warning("a batch of %d events failed (%r); one by one", len(batch), exc)
            return await self._one_by_one(batch)
        if len(batch) < limit:
            self._queued = False  # drained: the next batches go in one transaction
        if batch:
            self._on_commit()
        return len(batch)

    async def settle_contact(self, account_id: str, user_id: str | None) -> None:
        """Before a send to this contact: what they sent that was acknowledged takes effect.

        Every delivery the webhook acknowledged so far is ingested, then this contact's queued
        events are applied in their order, ahead of everyone else's backlog (events of other
        contacts keep their place: per-contact order is all the engine needs).
        """
        await self.ingest_through(self._head())
        if user_id is None or not self._queued:
            return  # nothing queued: what was acknowledged is applied already
        if not await contact_has_queued(self._db.reader, account_id, user_id):
            return
        while True:
            batch: list[QueuedEvent] = []
            try:
                async with self._db.transaction() as conn:
                    batch = await claim_contact(conn, account_id, user_id, 256)
                    if batch:
                        await self._apply(conn, batch)
            except Exception as exc:
                if is_transient(exc):
                    raise
                await self._one_by_one(batch)
                continue
            if batch:
                self._on_commit()
            if len(batch) < 256:
                return

    async def _apply(self, conn: aiosqlite.Connection, batch: list[QueuedEvent]) -> None:
        await self._sink.handle(conn, contact_order(decode_event(q.text) for q in batch))
        await delete_queued(conn, [q.id for q in batch])

    async def _one_by_one(self, batch: list[QueuedEvent]) -> int:
        """Each event of a failed batch in its own transaction; the one that fails again is
        set aside with its reason, the others are applied."""
        for q in batch:
            try:
                async with self._db.transaction() as conn:
                    if again := await claim_one(conn, q.id):
                        await self._apply(conn, again)
            except Exception as exc:
                if is_transient(exc):
                    raise
                await self._set_aside(q, exc)
        self._on_commit()
        return len(batch)

    async def _set_aside(self, q: QueuedEvent, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        self._metrics.inc("events_set_aside", help="events the engine could not apply")
        log.error(
            "event %d of delivery %d set aside: %s; `bot inbox` lists it",
            q.id,
            q.inbox_id,
            reason,
            exc_info=exc,
        )
        async with self._db.transaction() as conn:
            await set_aside(conn, q.id, reason, self._clock.now())


def _parse(row: InboxRow) -> ParsedDelivery | str:
    try:
        return parse_delivery(row.body)
    except MalformedDelivery as exc:
        return str(exc)


def _no_later(ev: Event, received: datetime) -> Event:
    """The event's time, never later than its delivery's arrival: a window must never be
    believed open longer than Meta could have opened it (a clock skewed into the future)."""
    if ev.timestamp <= received:
        return ev
    return replace(ev, timestamp=received)
