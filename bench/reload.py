"""Webhook acks while the daemon hot-reloads a large flow set, as a ratio to no reload.

`bot run` serves generated flows (`--mb` of YAML: keyword DM flows, each naming a template)
as a child process. This process posts signed comment deliveries to it back to back, one at
a time on a keep-alive connection, and records each ack's latency. After a quiet stretch it
touches one template, as an editor's save does; the daemon's watcher notices within 2 s and
reloads, and its log says when the reload has finished. The figure is the worst ack while the
reload ran (from the touch to that log line) against the worst ack over the quiet stretch
before the touch, in the same run.

    python bench/reload.py             # 5 MB of flows, as in the issue
    python bench/reload.py --mb 2      # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from _common import IG_ACCOUNT, SECRET, Daemon, bot_settings, write_settings

from bot.webhook import sign

FLOW = """  - id: f{n:06d}
    description: generated flow {n} of the reload bench
    trigger: {{type: dm, keywords: [kw{n:06d}, word{n:06d}]}}
    steps:
      - {{id: greet, type: send, template: bench/t{t}.j2}}
      - {{id: wait, type: wait_reply, timeout: 1h, save_as: answer}}
      - {{id: done, type: send, template: bench/t{t}.j2}}
"""


def write_flows(root: Path, megabytes: float, per_file: int) -> int:
    """Flow files of `per_file` flows each until `megabytes` of YAML; returns the bytes."""
    (root / "flows").mkdir()
    (root / "templates" / "bench").mkdir(parents=True)
    for t in range(50):
        (root / "templates" / "bench" / f"t{t}.j2").write_text(
            "Hi {{ contact | first_name }}! Template " + str(t) + ", for {{ flow.id }}.\n"
        )
    size, n, part = 0, 0, 0
    while size < megabytes * 1_000_000:
        text = "flows:\n" + "".join(FLOW.format(n=n + i, t=(n + i) % 50) for i in range(per_file))
        (root / "flows" / f"part{part:03d}.yaml").write_text(text)
        size, n, part = size + len(text.encode()), n + per_file, part + 1
    return size


def delivery(i: int) -> bytes:
    """A comment no flow matches (only DMs start these flows): stored and acknowledged."""
    return json.dumps(
        {
            "object": "instagram",
            "entry": [
                {
                    "id": IG_ACCOUNT,
                    "time": int(time.time()),
                    "changes": [
                        {
                            "field": "comments",
                            "value": {
                                "id": f"reload-{os.getpid()}-{i}",
                                "text": "nice reel",
                                "from": {"id": f"u{i % 500}", "username": f"u{i % 500}"},
                                "media": {"id": "reel-1"},
                            },
                        }
                    ],
                }
            ],
        }
    ).encode()


class Poster:
    """Posts deliveries one after another; keeps (sent at, latency) for each ack."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.acks: list[tuple[float, float]] = []
        self.stop = asyncio.Event()

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            i = 0
            while not self.stop.is_set():
                body = delivery(i)
                headers = {"X-Hub-Signature-256": sign(SECRET.encode(), body)}
                sent = time.monotonic()
                async with session.post(self.url, data=body, headers=headers) as resp:
                    await resp.read()
                    assert resp.status == 200, resp.status
                self.acks.append((sent, time.monotonic() - sent))
                i += 1
                await asyncio.sleep(0.005)

    def worst(self, start: float, end: float) -> tuple[float, float, int]:
        """Worst and median ack of the requests in flight at some point in [start, end]."""
        spans = [lat for sent, lat in self.acks if sent <= end and sent + lat >= start]
        return max(spans), statistics.median(spans), len(spans)


async def wait_for_line(log: Path, words: tuple[str, ...], after: int, within: float) -> float:
    """When one of `words` first shows in the log past offset `after` (polled every 50 ms)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")[after:]  # noqa: ASYNC240 (a bench, a small file)
        if any(w in text for w in words):
            return time.monotonic()
        await asyncio.sleep(0.05)
    raise RuntimeError(f"no {words} in the daemon's log within {within} s")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mb", type=float, default=5.0, help="megabytes of flows (default 5)")
    parser.add_argument("--per-file", type=int, default=2000, help="flows per file (2000)")
    parser.add_argument("--quiet", type=float, default=5.0, help="seconds before the touch")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        size = write_flows(tmp, args.mb, args.per_file)
        settings = bot_settings(tmp / "bot.sqlite3", "http://127.0.0.1:9", log_level="INFO")
        settings.update(flows_dir=str(tmp / "flows"), templates_dir=str(tmp / "templates"))
        daemon = Daemon(write_settings(tmp / "bot.yaml", settings), tmp / "daemon.log")
        started = await daemon.start(within=600)
        print(
            f"{size / 1e6:.1f} MB of flows in {len(os.listdir(tmp / 'flows'))} files; "
            f"the daemon checked them and started in {started:.1f} s"
        )
        poster = Poster(f"http://127.0.0.1:{daemon.port}/webhook")
        posting = asyncio.create_task(poster.run())
        try:
            await asyncio.sleep(args.quiet)
            after = len((tmp / "daemon.log").read_text(errors="replace"))
            touched = time.monotonic()
            os.utime(tmp / "templates" / "bench" / "t0.j2")
            done = await wait_for_line(
                tmp / "daemon.log", ("flows reloaded", "NOT reloaded"), after, 600
            )
            await asyncio.sleep(0.5)
        finally:
            poster.stop.set()
            await posting
            await daemon.stop()
        span = done - touched
        quiet_worst, quiet_median, quiet_n = poster.worst(touched - args.quiet + 0.5, touched)
        busy_worst, busy_median, busy_n = poster.worst(touched, done)
        print(f"reload: {span:.1f} s from the touch to 'flows reloaded' in the log")
        print(
            f"without a reload: worst ack {quiet_worst * 1000:.1f} ms, "
            f"median {quiet_median * 1000:.1f} ms ({quiet_n} webhooks)"
        )
        print(
            f"during the reload: worst ack {busy_worst * 1000:.1f} ms, "
            f"median {busy_median * 1000:.1f} ms ({busy_n} webhooks)"
        )
        print(f"worst ack during / without a reload: {busy_worst / quiet_worst:.1f}")


if __name__ == "__main__":
    asyncio.run(main())
