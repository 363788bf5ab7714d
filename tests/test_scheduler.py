"""The daemon's wall-clock wake-up: APScheduler must wake the dispatcher on the loop itself."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from bot.clock import SystemClock
from bot.scheduler import SchedulerWakeup


async def test_a_scheduled_wake_reaches_the_waiting_dispatcher_promptly() -> None:
    # Debug mode turns an `Event.set()` from APScheduler's worker thread into an error
    # instead of a wake that silently waits for unrelated I/O on the loop.
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    clock = SystemClock()
    wakeup = SchedulerWakeup(clock)
    wakeup.start()
    try:
        started = time.monotonic()
        # asyncio.wait, not wait_for: a waiter the wake never reached can't even be cancelled.
        woken = asyncio.ensure_future(wakeup.wait(clock.now() + timedelta(milliseconds=50)))
        done, _ = await asyncio.wait({woken}, timeout=5)
        assert done, "the scheduled wake never reached the loop"
        assert time.monotonic() - started < 2
        # And again: the job is re-aimed for each wait, and a kick still cuts a wait short.
        loop.call_later(0.05, wakeup.kick)
        await asyncio.wait_for(wakeup.wait(clock.now() + timedelta(hours=1)), 5)
    finally:
        wakeup.shutdown()
        loop.set_debug(False)
