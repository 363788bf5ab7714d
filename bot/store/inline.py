"""SQLite on the event loop itself, for `bot simulate`'s throwaway database.

aiosqlite runs each connection in a thread of its own, so every call is a hop to that thread
and back (about 0.2 ms here). The daemon needs that: a webhook's ack must never wait for SQL.
`bot simulate` runs on a virtual clock in one process, where nothing waits for an ack but the
next step: there the hops were half the time of a 1,000-contact month (bench/simulate.py).
`InlineConnection` runs the same calls inline, with exactly the part of aiosqlite's API the
store uses (`execute` awaited or as `async with ... as cur`, the cursor's `fetchone`,
`fetchall`, `rowcount` and `lastrowid`, `executemany`, `execute_fetchall`,
`set_trace_callback`, `close`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Generator, Iterable
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["InlineConnection", "InlineCursor"]


class InlineCursor:
    __slots__ = ("_cur",)

    def __init__(self, cur: sqlite3.Cursor) -> None:
        self._cur = cur

    async def fetchone(self) -> Any:
        return self._cur.fetchone()

    async def fetchall(self) -> list[Any]:
        return self._cur.fetchall()

    async def close(self) -> None:
        self._cur.close()

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cur.lastrowid


class _Result:
    """What `execute` returns, as aiosqlite's does: awaited, the cursor; entered with
    `async with`, the cursor, closed on the way out. The SQL runs when awaited or entered
    (not when called), in the order aiosqlite's thread would run it."""

    __slots__ = ("_run", "_cursor")

    def __init__(self, run: Callable[[], sqlite3.Cursor]) -> None:
        self._run = run
        self._cursor: InlineCursor | None = None

    def __await__(self) -> Generator[Any, None, InlineCursor]:
        yield from ()  # a generator that never suspends: awaiting it just runs the SQL
        return InlineCursor(self._run())

    async def __aenter__(self) -> InlineCursor:
        self._cursor = InlineCursor(self._run())
        return self._cursor

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._cursor is not None:
            await self._cursor.close()


class InlineConnection:
    """A plain `sqlite3.Connection` behind the subset of `aiosqlite.Connection` the store uses."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @classmethod
    def connect(cls, path: Path) -> InlineConnection:
        # Autocommit, as the store opens aiosqlite's: transactions are its own BEGIN/COMMIT.
        return cls(sqlite3.connect(path, isolation_level=None))

    # Parameters as aiosqlite takes them (a sequence or a mapping), passed through unchanged.
    def execute(self, sql: str, parameters: Any = ()) -> _Result:
        return _Result(partial(self._conn.execute, sql, parameters))

    def executemany(self, sql: str, parameters: Iterable[Any]) -> _Result:
        return _Result(partial(self._conn.executemany, sql, parameters))

    async def execute_fetchall(self, sql: str, parameters: Any = ()) -> list[Any]:
        return self._conn.execute(sql, parameters).fetchall()

    async def set_trace_callback(self, handler: Callable[[str], object] | None) -> None:
        self._conn.set_trace_callback(handler)

    async def close(self) -> None:
        self._conn.close()
