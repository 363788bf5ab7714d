"""What the start-up check of a database file costs (bot/store/integrity.py).

Builds a main file of about `--mb` megabytes with the bot's schema (events, comments, send log
and outbox rows in equal numbers, with their indexes), then times `PRAGMA quick_check` and
`integrity_check` from the page cache, and, when the page cache can be dropped (root, Linux),
quick_check from a cold cache with and without the bot's read-through in file order first.

    python bench/integrity.py                  # 1 GB, in a temporary folder
    python bench/integrity.py --mb 200 --keep /tmp/bench.sqlite3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.clock import SystemClock  # noqa: E402
from bot.store.db import _statements  # noqa: E402
from bot.store.integrity import check_file  # noqa: E402
from bot.store.migrations import MIGRATIONS, RewriteCheck  # noqa: E402

ACCOUNT = "17841400000000001"


def build(path: Path, mb: int) -> int:
    """Rows in bulk with SQLite's safety off (only the result's size and shape matter)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    for script in MIGRATIONS:
        if not isinstance(script, RewriteCheck):
            for statement in _statements(script):
                conn.execute(statement)
    rnd = random.Random(1)
    body = json.dumps({"text": "Hi there! Thanks for asking about pricing. Plans start at $9."})
    n, step, t0 = 0, 20_000, 1772449200000
    while path.stat().st_size < mb * 1024 * 1024:
        rows = range(n, n + step)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO events VALUES (?, ?, ?, 'Comment', ?, ?)",
            [(ACCOUNT, f"comment:{i}:{rnd.random()}", f"u{i % 100000}", t0 + i, i) for i in rows],
        )
        conn.executemany(
            "INSERT INTO comments (account_id, comment_id, user_id, media_id, text, created_at)"
            " VALUES (?, ?, ?, ?, 'PRICING please, tell me more', ?)",
            [(ACCOUNT, f"c{i}", f"u{i % 100000}", f"m{i % 50}", t0 + i) for i in rows],
        )
        conn.executemany(
            "INSERT INTO send_log (outbox_id, account_id, user_id, at, outcome, kind, basis,"
            " message_id) VALUES (?, ?, ?, ?, 'sent', 'private_reply', 'private_reply', ?)",
            [(i, ACCOUNT, f"u{i % 100000}", t0 + i, f"mid.{i}") for i in rows],
        )
        conn.executemany(
            "INSERT INTO outbox (account_id, user_id, kind, intent, body, due_at, created_at,"
            " state, once_key) VALUES (?, ?, 'private_reply', '{}', ?, ?, ?, 'sent', ?)",
            [(ACCOUNT, f"u{i % 100000}", body, t0 + i, t0 + i, f"pr:c{i}") for i in rows],
        )
        conn.execute("COMMIT")
        n += step
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    return n


def timed(path: Path, sql: str) -> float:
    conn = sqlite3.connect(path)
    t = time.perf_counter()
    assert conn.execute(sql).fetchall() == [("ok",)]
    conn.close()
    return time.perf_counter() - t


def drop_caches() -> bool:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=1024)
    ap.add_argument("--keep", type=Path, help="build (or reuse) the file here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "bot.sqlite3"
        if not path.exists():
            t = time.perf_counter()
            rows = build(path, args.mb)
            print(f"built {rows:,} rows a table in {time.perf_counter() - t:.1f} s")
        print(f"file: {path.stat().st_size / 1e6:,.0f} MB")
        timed(path, "PRAGMA quick_check")  # warm the page cache
        warm = timed(path, "PRAGMA quick_check")
        print(f"quick_check, page cache:      {warm:6.2f} s")
        print(f"integrity_check, page cache:  {timed(path, 'PRAGMA integrity_check'):6.2f} s")
        clock = SystemClock()
        t = time.perf_counter()
        assert check_file(path, monotonic=clock.monotonic, budget=600)
        print(f"check_file, page cache:       {time.perf_counter() - t:6.2f} s")
        if not drop_caches():
            print("(the page cache can't be dropped here: no cold figures)")
            return
        cold = timed(path, "PRAGMA quick_check")
        print(f"quick_check, cold:            {cold:6.2f} s ({cold / warm:.1f} x warm)")
        drop_caches()
        t = time.perf_counter()
        assert check_file(path, monotonic=clock.monotonic, budget=600)
        bot = time.perf_counter() - t
        print(f"check_file (read, check), cold: {bot:5.2f} s ({bot / warm:.1f} x warm)")


if __name__ == "__main__":
    main()
