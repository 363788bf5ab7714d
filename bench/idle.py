"""Idle sockets against real deliveries: does a signed webhook still get its 200 quickly while
someone holds many idle connections to the daemon?

The daemon runs as `python -m bot run` with its open-file limit lowered (both soft and hard,
as `ulimit -n` would), like the issue's 1,024. An attacker process opens `--idle` plain TCP
connections that never send a byte, and opens a new one a second (`--reconnect`) after the
daemon closes one, so as many as it can stay open all the time. Meanwhile webhooks are
posted one at a time, each on a fresh connection (as Meta opens them), with Meta's 5 s
patience.

It prints, without and then with the idle sockets: the acks' p50 and p99 (and the ratio of
the two phases), how many posts failed or timed out, whether `/healthz` answered, and how
many bytes the daemon's log grew by in the second phase.

    python bench/idle.py                      # 1,100 idle sockets, ulimit -n 1024
    python bench/idle.py --idle 600 --nofile 512 --seconds 10
    python bench/idle.py --reconnect 0          # a connection flood: reopened at once
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from _common import IG_ACCOUNT, SECRET, Daemon, bot_settings, write_settings

from bot.webhook import sign

FAILURES: dict[str, int] = {}  # why posts failed, by exception


def _dm(i: int) -> bytes:
    ts = 1772449200000 + i
    return json.dumps(
        {
            "object": "instagram",
            "entry": [
                {
                    "id": IG_ACCOUNT,
                    "time": ts,
                    "messaging": [
                        {
                            "sender": {"id": f"9{i:015d}"},
                            "recipient": {"id": IG_ACCOUNT},
                            "timestamp": ts,
                            "message": {"mid": f"m{i}", "text": "hello"},
                        }
                    ],
                }
            ],
        }
    ).encode()


async def _post(port: int, i: int) -> float | None:
    """Seconds to the 200, or None (refused, reset, or no answer within Meta's 5 s)."""
    body = _dm(i)
    started = time.perf_counter()
    try:
        async with (
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True),
                timeout=aiohttp.ClientTimeout(total=5),
            ) as session,
            session.post(
                f"http://127.0.0.1:{port}/webhook",
                data=body,
                headers={"X-Hub-Signature-256": sign(SECRET.encode(), body)},
            ) as resp,
        ):
            await resp.read()
            ok = resp.status == 200
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        FAILURES[type(exc).__name__] = FAILURES.get(type(exc).__name__, 0) + 1
        return None
    return time.perf_counter() - started if ok else None


async def _healthz(port: int) -> str:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(f"http://127.0.0.1:{port}/healthz") as resp,
        ):
            return f"{resp.status}"
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        return f"no answer ({type(exc).__name__})"


async def _phase(port: int, seconds: float, start: int) -> tuple[list[float], int]:
    acks: list[float] = []
    failed = 0
    deadline = time.monotonic() + seconds
    i = start
    while time.monotonic() < deadline:
        took = await _post(port, i)
        i += 1
        if took is None:
            failed += 1
        else:
            acks.append(took)
    return acks, failed


class Attacker:
    """`n` idle connections, each reopened `pause` seconds after the daemon closes it.

    In a process of its own: sharing the poster's event loop, a fast-reconnecting attacker
    delayed the poster's request by many loop turns after its connect, which no sender
    across the internet would do (and the daemon then closed it as a silent connection).
    """

    def __init__(self, port: int, n: int, pause: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.open_now = ctx.Value("i", 0)
        self.closed = ctx.Value("i", 0)
        self._proc = ctx.Process(
            target=_attack, args=(port, n, pause, self.open_now, self.closed), daemon=True
        )
        self.n = n

    @property
    def open(self) -> int:
        return int(self.open_now.value)

    @property
    def closed_by_server(self) -> int:
        return int(self.closed.value)

    async def start(self) -> None:
        self._proc.start()
        for _ in range(400):  # until each has connected once
            if self.open + self.closed_by_server >= self.n:
                break
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self._proc.terminate()
        await asyncio.to_thread(self._proc.join)


def _attack(port: int, n: int, pause: float, open_now: Any, closed: Any) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1000), hard))

    async def hold() -> None:
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            open_now.value += 1
            try:
                await reader.read()  # b"" when the daemon closes it
            except OSError:
                pass
            finally:
                closed.value += 1
                open_now.value -= 1
                writer.close()
            await asyncio.sleep(pause)

    async def main() -> None:
        # In batches: a burst past the kernel's accept queue leaves connections half open
        # (the client thinks it is connected, the daemon never saw it), which would spare
        # the daemon the very file descriptors the attack is about.
        tasks = []
        for i in range(0, n, 64):
            tasks += [asyncio.create_task(hold()) for _ in range(min(64, n - i))]
            await asyncio.sleep(0.05)
        await asyncio.gather(*tasks)

    asyncio.run(main())


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


async def run(idle: int, nofile: int, seconds: float, pause: float) -> None:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        settings = bot_settings(tmpd / "bot.sqlite3", "http://127.0.0.1:9", log_level="INFO")
        config = write_settings(tmpd / "bot.yaml", settings)
        log = tmpd / "daemon.log"
        daemon = Daemon(config, log, preexec_fn=limit)
        await daemon.start()
        try:
            port = daemon.port
            base, base_failed = await _phase(port, seconds, 0)
            attacker = Attacker(port, idle, pause)
            await attacker.start()
            held = attacker.open
            daemon_fds = len(os.listdir(f"/proc/{daemon.pid}/fd"))
            before = log.stat().st_size
            under, under_failed = await _phase(port, seconds, 1_000_000)
            health = await _healthz(port)
            grew = log.stat().st_size - before
            await attacker.stop()
        finally:
            await daemon.stop()
        lines = log.read_text(errors="replace").splitlines()
    emfile = sum("Too many open files" in x for x in lines)
    print(
        f"ulimit -n {nofile}, {idle} idle sockets wanted; when posting began {held} were open"
        f" and the daemon had {daemon_fds} files open"
    )
    phases = (("no idle sockets", base, base_failed), ("idle", under, under_failed))
    for name, acks, failed in phases:
        print(
            f"  {name:>15}: {len(acks)} acks in {seconds:.0f} s, {failed} failed;"
            f" p50 {_pct(acks, 0.5):.1f} ms, p99 {_pct(acks, 0.99):.1f} ms"
        )
    if base and under:
        ratio50 = statistics.median(under) / statistics.median(base)
        ratio99 = _pct(under, 0.99) / _pct(base, 0.99)
        print(f"  ratio idle / none: p50 {ratio50:.2f}, p99 {ratio99:.2f}")
    if FAILURES:
        print(f"  failures: {', '.join(f'{k} x{v}' for k, v in sorted(FAILURES.items()))}")
    print(f"  closed by the daemon meanwhile: {attacker.closed_by_server}")
    print(f"  /healthz with the idle sockets open: {health}")
    print(f"  log grew {grew / 1e6:.2f} MB while posting; 'Too many open files' lines: {emfile}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--idle", type=int, default=1100, help="idle sockets to hold open")
    ap.add_argument("--nofile", type=int, default=1024, help="the daemon's open-file limit")
    ap.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    ap.add_argument(
        "--reconnect", type=float, default=1.0, help="seconds before a closed socket reopens"
    )
    args = ap.parse_args()
    asyncio.run(run(args.idle, args.nofile, args.seconds, args.reconnect))


if __name__ == "__main__":
    main()
