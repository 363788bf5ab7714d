"""The only place that reads time.

Everything else takes a `Clock`, so tests and `bot simulate` can move days in milliseconds
(DEVELOPERS.md: "Time is injected").
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = [
    "Clock",
    "SystemClock",
    "VirtualClock",
    "from_ms",
    "from_seconds",
    "to_ms",
    "to_resolution",
    "utc",
]


def utc(
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    microsecond: int = 0,
) -> datetime:
    """An aware UTC datetime; a shorthand for tests and scenarios."""
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def from_ms(ms: int | float) -> datetime:
    """Exact for whole milliseconds: no trip through a float of seconds."""
    if isinstance(ms, int):
        return _EPOCH + timedelta(milliseconds=ms)
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def from_seconds(s: int | float) -> datetime:
    return datetime.fromtimestamp(s, tz=UTC)


def to_ms(t: datetime) -> int:
    """Whole milliseconds, rounded down, in integer arithmetic.

    Down, never up: a stored time is never later than the instant it records, so a deadline
    stored this way never lets a send through after the real one (the old `round` moved
    times up to half a millisecond into the future, which sub-second test clocks exposed).
    """
    return (t - _EPOCH) // _MS


class Clock(Protocol):
    def now(self) -> datetime:
        """Aware UTC wall time, in whole milliseconds (`to_resolution`)."""

    def monotonic(self) -> float:
        """Seconds for measuring durations; never goes back."""

    def thread_time(self) -> float:
        """CPU seconds this thread has run: work done, whatever else the machine does."""

    async def sleep_until(self, when: datetime) -> None:
        """Return once `now() >= when` (or soon after, for the system clock)."""


def to_resolution(t: datetime) -> datetime:
    """`t` cut to whole milliseconds, the resolution of Meta's timestamps and of the store."""
    return t.replace(microsecond=t.microsecond - t.microsecond % 1000)


class SystemClock:
    def now(self) -> datetime:
        # Milliseconds, as everything stored and everything Meta sends: one resolution, so no
        # time read here is ever compared with its own stored copy and found different (a
        # follow-up due at .618 whose run said .618734 was due forever and never fired).
        return to_resolution(datetime.now(UTC))

    def monotonic(self) -> float:
        return time.monotonic()

    def thread_time(self) -> float:
        return time.thread_time()

    async def sleep_until(self, when: datetime) -> None:
        delay = (when - self.now()).total_seconds()
        if delay > 0:
            await asyncio.sleep(delay)


class VirtualClock:
    """A clock that only moves when told; sleepers wake as `advance` passes their time."""

    def __init__(self, start: datetime | None = None) -> None:
        # Sub-second digits, as a real clock has: whole seconds hid a real bug (issue 13, item 4).
        self._now = start or utc(2026, 1, 5, 9, 0, 0, 417_293)
        if self._now.tzinfo is None:
            raise ValueError("VirtualClock needs an aware datetime")
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> datetime:
        return to_resolution(self._now)

    def monotonic(self) -> float:
        return self._now.timestamp()

    def thread_time(self) -> float:
        """None passes: what a simulation runs never depends on how busy the machine is."""
        return 0.0

    async def sleep_until(self, when: datetime) -> None:
        if when <= self._now:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (when, next(self._seq), fut))
        await fut

    def set(self, when: datetime) -> None:
        if when < self._now:
            raise ValueError("a VirtualClock never goes back")
        self._now = when
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    def advance(self, delta: timedelta | float) -> datetime:
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        self.set(self._now + step)
        return self._now

    def next_wake(self) -> datetime | None:
        """The earliest time a sleeper waits for, so a simulation can jump straight to it."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None
