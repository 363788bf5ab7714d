"""The start-up checks of one SQLite file: the bot can read and write it, and it is not damaged.

A damaged main file started and answered `/healthz` while every delivery went bad, and
read-only files started and failed at the first write. `check_file` refuses both with one
line naming the file and what to do; bot/store/files.py runs it on both files before anything
opens them, for every command.

Damage: `PRAGMA quick_check` of the whole file (every page's b-tree structure; the full
integrity_check also matches every index to its table, three times as long). On a 1.1 GB main
file (bench/integrity.py) it took 2.0 s from the page cache and 12.8 s from a cold disk,
where it reads pages in b-tree order, at random: read through once in file order first, the
cold check took 2.1 s + 1.8 s. So each file is read in order, then checked, at every start.
Checking only after an unclean stop would miss what was seen: pages overwritten while the
daemon was stopped (a bad copy or restore, a disk) are damage to a cleanly stopped file; and
checking the schema and first pages only would miss six pages in the middle. A file so large
that its check passes `CHECK_SECONDS` (some 15 GB here) starts with a warning instead.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

from bot.errors import BotError

__all__ = ["ACCEPT", "CHECK_SECONDS", "StoreRefused", "check_file", "damaged"]

log = logging.getLogger(__name__)

# What one start may spend reading and checking each file (see the module's docstring).
CHECK_SECONDS = 60.0
ACCEPT = "bot run --accept-new-database"
_HEADER = b"SQLite format 3\x00"
_CHUNK = 1 << 20


class StoreRefused(BotError):
    """A database file can't be used as it is; the message names it and what to do."""


def check_file(path: Path, *, monotonic: Callable[[], float], budget: float) -> bool:
    """Refuse a file the bot can't write, or one that is damaged; False if the check ran
    out of `budget` seconds (the file is then unchecked, not refused)."""
    _check_access(path)
    if not path.exists() or path.stat().st_size == 0:
        return True
    deadline = monotonic() + budget
    _read_through(path, deadline, monotonic)
    return _quick_check(path, deadline, monotonic, budget)


def _check_access(path: Path) -> None:
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreRefused(
            f"{path}: cannot create its folder {folder}: {exc.strerror}: create it, writable"
            " by the bot's user, or set database.path to a folder that is"
        ) from None
    if not _writable(folder):
        shown = folder if str(folder) != "." else folder.absolute()
        raise StoreRefused(
            f"{path}: its folder {shown} is {_why_not(folder)}, and SQLite writes its -wal and"
            f" -shm files beside the database: make the folder writable by uid {os.geteuid()}"
            " (chown or chmod u+rwx), or set database.path to a folder that is"
        )
    for f, what in (
        (path, ""),
        (Path(f"{path}-wal"), f" (the write-ahead log of {path.name})"),
        (Path(f"{path}-shm"), f" (the shared-memory index of {path.name})"),
    ):
        if not f.exists():
            continue
        if not f.is_file():
            raise StoreRefused(f"{f}{what} is not a file: move it away")
        if not (_writable(f) and os.access(f, os.R_OK)):
            raise StoreRefused(
                f"{f}{what} is {_why_not(f)}: make it readable and writable by uid"
                f" {os.geteuid()} (chown or chmod u+rw)"
            )


def _writable(p: Path) -> bool:
    mode = os.W_OK | (os.X_OK if p.is_dir() else 0)
    if os.access in os.supports_effective_ids:
        return os.access(p, mode, effective_ids=True)
    return os.access(p, mode)  # pragma: no cover - every POSIX system the bot runs on


def _why_not(p: Path) -> str:
    with_dir = p if p.is_dir() else p.parent
    if os.statvfs(with_dir).f_flag & os.ST_RDONLY:
        return "on a read-only file system"
    st = p.stat()
    return (
        f"read-only for this process (uid {os.geteuid()}; mode {stat.filemode(st.st_mode)},"
        f" owner uid {st.st_uid})"
    )


def _read_through(path: Path, deadline: float, monotonic: Callable[[], float]) -> None:
    """Read the file (and its WAL) once in order: the check's random reads then come from the
    page cache (12.8 s -> 3.9 s for a cold 1.1 GB file). A read error is damage too."""
    buf = bytearray(_CHUNK)
    for f in (path, Path(f"{path}-wal")):
        try:
            with open(f, "rb", buffering=0) as fh:
                while fh.readinto(buf) and monotonic() < deadline:
                    pass
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise damaged(path, f"reading {f.name} failed: {exc.strerror}") from None


def _quick_check(
    path: Path, deadline: float, monotonic: Callable[[], float], budget: float
) -> bool:
    with open(path, "rb") as fh:
        if fh.read(len(_HEADER)) != _HEADER:
            raise damaged(path, "it does not start with SQLite's header")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 2000")  # a daemon's recovery of its WAL, at most
        conn.set_progress_handler(lambda: monotonic() > deadline, 10_000)
        rows = conn.execute("PRAGMA quick_check(1)").fetchall()
    except sqlite3.OperationalError as exc:
        if str(exc) == "interrupted":
            log.warning(
                "%s: quick_check did not finish within %.0f s, so it starts unchecked: check"
                " it with `sqlite3 %s 'PRAGMA quick_check'` while the bot is stopped",
                path,
                budget,
                path,
            )
            return False
        if exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY:
            raise StoreRefused(
                f"{path} is locked by another process: is another bot running on it?"
            ) from None
        raise StoreRefused(f"{path} cannot be opened: {exc}") from None
    except sqlite3.DatabaseError as exc:  # "database disk image is malformed", ...
        raise damaged(path, f"quick_check: {exc}") from None
    finally:
        conn.close()
    found = [str(r[0]) for r in rows]
    if found != ["ok"]:
        detail = "; ".join(line.strip() for f in found for line in f.splitlines() if line)
        raise damaged(path, f"quick_check: {detail[:200]}")
    return True


def damaged(path: Path, why: str) -> StoreRefused:
    """The one line for a damaged file: what was found, and the two ways on."""
    return StoreRefused(
        f"{path} is damaged ({why}): restore it from a backup, or move it away and start"
        f" with `{ACCEPT}`"
    )
