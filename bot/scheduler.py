"""Waking the sender at the next due time. The truth about what is due lives in SQLite.

One APScheduler job, re-aimed at the earliest due time, rather than a job per message: the
memory job store costs about 0.8 KB a job and forgets everything on restart (issue 4). Its
misfire handling is set on purpose: `misfire_grace_time=None` runs a late wake however late
(the default 1 s grace silently skipped due jobs after a 2.5 s stall), and `coalesce` folds a
backlog of wakes into one, because one wake sends everything that is due.

`ClockWakeup` does the same over the injected clock, so a `VirtualClock` can move days in
milliseconds in tests and `bot simulate`.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger

from bot.clock import Clock

__all__ = ["ClockWakeup", "SchedulerWakeup", "Wakeup"]


class Wakeup(Protocol):
    def kick(self) -> None:
        """Something new is due now (the engine queued a send)."""

    async def wait(self, until: datetime | None) -> None:
        """Return at `until` (never, if None) or when kicked, whichever is first."""


class ClockWakeup:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._kicked = asyncio.Event()

    def kick(self) -> None:
        self._kicked.set()

    async def wait(self, until: datetime | None) -> None:
        if self._kicked.is_set():
            self._kicked.clear()
            return
        waiters: list[asyncio.Future[object]] = [asyncio.ensure_future(self._kicked.wait())]
        if until is not None:
            waiters.append(asyncio.ensure_future(self._clock.sleep_until(until)))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await w
        self._kicked.clear()


class SchedulerWakeup:
    """APScheduler on the wall clock, for the daemon.

    It also wakes at least every `safety` seconds: an operator's `bot resume` or a row
    written by another process is then seen without a kick.
    """

    JOB = "wake-sender"

    def __init__(self, clock: Clock, safety: float = 30.0) -> None:
        self._clock = clock
        self._safety = timedelta(seconds=safety)
        self._kicked = asyncio.Event()
        self._scheduler = AsyncIOScheduler(
            timezone="UTC",
            # Several instances: the job is re-aimed while the last wake's coroutine may not
            # have finished yet, and with one allowed APScheduler skipped that wake ("maximum
            # number of running instances reached", seen in bench/ingest.py at saturation).
            # `_fire` only sets an event, so overlapping runs are harmless.
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 16},
        )

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        self._kicked.set()

    def kick(self) -> None:
        self._kicked.set()

    async def _fire(self) -> None:
        """The job. A coroutine function, so APScheduler's asyncio executor runs it on the
        loop: a plain function runs in a worker thread, where `Event.set()` is not safe and
        does not wake the loop (the due wake then waited for unrelated I/O)."""
        self._kicked.set()

    async def wait(self, until: datetime | None) -> None:
        latest = self._clock.now() + self._safety
        until = latest if until is None else min(until, latest)
        self._scheduler.add_job(
            self._fire, DateTrigger(run_date=until), id=self.JOB, replace_existing=True
        )
        await self._kicked.wait()
        self._kicked.clear()
