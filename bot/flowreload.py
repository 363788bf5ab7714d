"""Hot reload of flows and templates without holding the event loop.

Checking flows is CPU work that grows with them: with 5 MB of flows one reload on the loop
held a webhook's 200 for 20.6 s. The check, the file reads and the stamp scan run in a thread
of their own; only the swap of the finished FlowSet (one assignment) runs on the loop. One
reload runs at a time; asking for one meanwhile (a save during a check, SIGHUP) runs exactly
one more after it, so the last change always wins. Nothing a file can contain ends the
watcher: a failed scan or reload is logged, the running flows stay, and it keeps watching.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from bot.flows.flowset import FlowSet

__all__ = ["FlowReloader", "FlowWatcher", "in_thread"]

log = logging.getLogger(__name__)

T = TypeVar("T")


async def in_thread(fn: Callable[[], T], name: str) -> T:
    """`fn()` in a daemon thread of its own. Unlike `asyncio.to_thread`, a stop need not wait
    for it: `asyncio.run` joins the default executor's threads on exit, and SIGTERM during a
    20 s check would have outlived Docker's 10 s. A cancelled wait drops the result."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def work() -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = fn()
        except Exception as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed while this ran
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name=name, daemon=True).start()
    return await future


def _without_full_collections(fn: Callable[[], T]) -> T:
    """`fn()` with the collector's full passes held off. A check builds and frees hundreds of
    thousands of objects by reference count (no cycles among them: measured); full passes
    over them found nothing, took half the check's time and held the GIL, so the loop, and
    the acks, waited up to 0.7 s at a time (bench/reload.py). The young generations are still
    collected; only one reload runs at once."""
    young, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, 1 << 30)
    try:
        return fn()
    finally:
        gc.set_threshold(young, middle, old)


class FlowReloader:
    """One reload at a time, off the loop; a request during one runs one more after it."""

    def __init__(
        self,
        load: Callable[[], FlowSet | None],
        install: Callable[[FlowSet | None], None],
        failed: Callable[[Exception], None],
    ) -> None:
        self._load = load
        self._install = install
        self._failed = failed
        self._task: asyncio.Task[bool] | None = None
        self._again = False
        self._closed = False

    def request(self) -> asyncio.Future[bool]:
        """Start a reload, or have the running one followed by another; the future ends with
        the last of them (True when it installed the flows). After `close`, nothing runs."""
        if self._closed:
            refused: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            refused.set_result(False)
            return refused
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="flow-reload")
        else:
            self._again = True
        return self._task

    async def _run(self) -> bool:
        while True:
            self._again = False
            ok = await self._once()
            if not self._again:
                return ok

    async def _once(self) -> bool:
        try:
            flowset = await in_thread(partial(_without_full_collections, self._load), "flow-check")
            self._install(flowset)
        except Exception as exc:
            self._failed(exc)
            return False
        return True

    async def close(self) -> None:
        """Drop a reload under way (its thread finishes alone; nothing is installed)."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class FlowWatcher:
    """Polls the files' stamps every `every` seconds, in a thread, and asks for a reload when
    they changed."""

    def __init__(
        self,
        scan: Callable[[], object],
        changed: Callable[[], asyncio.Future[Any]],
        every: float = 2.0,
    ) -> None:
        self._scan = scan
        self._changed = changed
        self.every = every
        self._poked = asyncio.Event()
        self._waiters: list[asyncio.Future[None]] = []

    def scan_now(self) -> asyncio.Future[None]:
        """Scan without waiting for the next tick; the future ends once that round, and any
        reload it started, has finished."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._poked.set()
        return waiter

    async def run(self, stopping: asyncio.Event) -> None:
        stamp = await self._stamp()
        while not stopping.is_set():
            await self._wait(stopping)
            if stopping.is_set():
                break
            waiters, self._waiters = self._waiters, []
            reload: asyncio.Future[Any] | None = None
            try:
                now = await self._stamp()
                if now is not None and now != stamp:
                    stamp = now
                    reload = self._changed()
            except Exception:
                log.exception("watching the flows failed a round; watching on")
            _resolve_after(reload, waiters)
        _resolve_after(None, self._waiters)

    async def _stamp(self) -> object | None:
        try:
            return await in_thread(self._scan, "flow-scan")
        except Exception:
            log.exception("scanning the flows and templates failed; trying again shortly")
            return None

    async def _wait(self, stopping: asyncio.Event) -> None:
        if not self._poked.is_set():
            waits = [asyncio.ensure_future(e.wait()) for e in (stopping, self._poked)]
            try:
                await asyncio.wait(waits, timeout=self.every, return_when="FIRST_COMPLETED")
            finally:
                for w in waits:
                    w.cancel()
        self._poked.clear()


def _resolve_after(task: asyncio.Future[Any] | None, waiters: list[asyncio.Future[None]]) -> None:
    def resolve(_: object = None) -> None:
        for w in waiters:
            if not w.done():
                w.set_result(None)

    if task is None or task.done():
        resolve()
    else:
        task.add_done_callback(resolve)
