"""What pruning the inbox costs the webhook acks that arrive meanwhile.

An inbox file of `--rows` processed deliveries (700-byte bodies, a thousand a second of
arrival time); `prune_processed` deletes the oldest `--prune` of them with the daemon's 10 ms
pauses between steps of 500 rows, while a probe appends one delivery every 5 ms through the
same writer, as a webhook would. Printed: the prune's time, each step's time on the loop, and
the probe's wait (its p99 and worst are what an ack would see).

    python bench/prune.py                       # 500,000 rows, prune 400,000
    python bench/prune.py --rows 100000 --prune 50000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.store.db import Database  # noqa: E402
from bot.store.inbox import INBOX_MIGRATIONS, prune_processed  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000


async def run(rows: int, prune: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = await Database.open(
            Path(tmp) / "inbox.sqlite3", "NORMAL", INBOX_MIGRATIONS, inline=True
        )
        async with db.transaction() as conn:
            await conn.executemany(
                "INSERT INTO inbox (received_at, body, state) VALUES (?, ?, 'done')",
                ((i // 1000, bytearray(700)) for i in range(rows)),
            )
        # Start from an empty WAL, as a daemon that has run a while does.
        await db.background.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        waits: list[float] = []
        ranges: list[float] = []
        stop = asyncio.Event()

        async def probe() -> None:
            while not stop.is_set():
                t = time.perf_counter()
                async with db.transaction() as conn:
                    await conn.execute(
                        "INSERT INTO inbox (received_at, body) VALUES (?, x'00')", (rows,)
                    )
                waits.append(time.perf_counter() - t)
                await asyncio.sleep(0.005)

        last = time.perf_counter()

        async def pause() -> bool:
            nonlocal last
            ranges.append(time.perf_counter() - last)
            await asyncio.sleep(0.01)  # as bot/app.py's pruner
            last = time.perf_counter()
            return True

        task = asyncio.create_task(probe())
        start = time.perf_counter()
        deleted = await prune_processed(db, prune // 1000, pause=pause)
        took = time.perf_counter() - start
        stop.set()
        await task
        again = time.perf_counter()
        left = await prune_processed(db, prune // 1000)
        again = time.perf_counter() - again
        await db.close()
    print(f"deleted {deleted} of {rows} in {took:.2f} s ({len(ranges)} steps)")
    print(
        f"  a step on the loop: p50 {pct(ranges, 0.5):.2f} ms, p99 {pct(ranges, 0.99):.2f} ms,"
        f" worst {max(ranges) * 1000:.2f} ms"
    )
    print(
        f"  a probe append meanwhile ({len(waits)}): p50 {pct(waits, 0.5):.2f} ms,"
        f" p99 {pct(waits, 0.99):.2f} ms, worst {max(waits) * 1000:.2f} ms"
    )
    print(f"  a second prune with nothing to delete: {left} rows in {again * 1000:.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=500_000)
    ap.add_argument("--prune", type=int, default=400_000)
    args = ap.parse_args()
    asyncio.run(run(args.rows, args.prune))


if __name__ == "__main__":
    main()
