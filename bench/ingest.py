"""Durable-ingest throughput and ack latency, as a ratio to a bare aiohttp handler.

Both servers run as child processes on loopback and are loaded by the same generator, wrk
(C, one thread, keep-alive), because the aiohttp client itself caps near 11k requests/s on
these 2-core machines. They are loaded in turns of a few seconds, bare then bot, `--rounds`
times, the idle one stopped (SIGSTOP) meanwhile; the median of the pairs' ratios is the
figure. Every request is a distinct, correctly signed Instagram comment
delivery of a fresh PRICING comment; the bot stores each one (WAL, group commit) before
answering, with its inbox worker processing deliveries at the same time, as in production: each
comment starts the pricing flow, whose private and public replies go to a stub Graph API in a
third process within the caps.

    python bench/ingest.py                  # NORMAL and FULL, 64 connections, 30 pairs of 1 s
    python bench/ingest.py --ingest-only    # also with the inbox worker off
    python bench/ingest.py --rounds 6 --modes NORMAL --paced 0   # quick look

Needs wrk (`apt-get install wrk`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret"
ACCOUNT = "17841400000000001"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_requests(path: Path, n: int, first: int = 0) -> Path:
    """`n` signed deliveries, each of a comment never seen before: a line "signature body"."""
    sys.path.insert(0, str(ROOT))
    from bot.webhook import sign

    text = os.environ.get("BENCH_TEXT", "PRICING please")
    with path.open("w") as out:
        for i in range(first, first + n):
            body = json.dumps(
                {
                    "object": "instagram",
                    "entry": [
                        {
                            "id": ACCOUNT,
                            "time": int(time.time()),
                            "changes": [
                                {
                                    "field": "comments",
                                    "value": {
                                        "from": {"id": f"user-{i}", "username": f"u{i}"},
                                        "media": {"id": "reel-1", "media_product_type": "REELS"},
                                        "id": f"bench-{os.getpid()}-{i}",
                                        "text": text,
                                    },
                                }
                            ],
                        }
                    ],
                },
                separators=(",", ":"),
            )
            out.write(f"{sign(SECRET.encode(), body.encode())} {body}\n")
    return path


def lua_script(pace_ms: float = 0.0) -> str:
    """wrk's script: the deliveries of the file named by $BENCH_REQUESTS, in turn (a file
    rather than a table in the script: Lua allows 65,536 constants a function)."""
    return (
        "local reqs = {}\n"
        'for line in io.lines(os.getenv("BENCH_REQUESTS")) do\n'
        '  local sig, body = line:match("^(%S+) (.*)$")\n'
        "  reqs[#reqs + 1] = {body, sig}\n"
        "end\n"
        "local i = 0\n"
        "request = function()\n"
        "  i = i % #reqs + 1\n"
        "  return wrk.format('POST', '/webhook', {['Content-Type']='application/json',"
        " ['X-Hub-Signature-256']=reqs[i][2]}, reqs[i][1])\n"
        "end\n" + (f"delay = function() return {pace_ms:.3f} end\n" if pace_ms > 0 else "")
    )


def serve(kind: str, port: int, sync: str, db: str, graph: str | None = None) -> None:
    """Child process: run one of the servers until SIGTERM."""
    sys.path.insert(0, str(ROOT))
    from aiohttp import web

    if kind == "graph":
        # Stands in for Meta's Graph API: every send accepted. The caps (750 private
        # replies an hour, 10 calls a second) keep the bot's sends to a trickle anyway.
        async def accept(request: web.Request) -> web.Response:
            await request.read()
            return web.json_response({"recipient_id": "u", "message_id": "m", "id": "c"})

        app = web.Application()
        app.router.add_post("/{tail:.*}", accept)
        web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)
        return

    if kind == "bare":

        async def handler(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(text="EVENT_RECEIVED")

        app = web.Application()
        app.router.add_post("/webhook", handler)
        web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)
        return

    from bot.app import create_app
    from bot.cli import serve as serve_bot
    from bot.config import config_from_mapping

    config = config_from_mapping(
        {
            "app_secret": SECRET,
            "verify_token": "v",
            "listen": {"host": "127.0.0.1", "port": port},
            "database": {"path": db, "synchronous": sync},
            "accounts": [
                {"id": ACCOUNT, "platform": "instagram", "token": "t", "graph_base_url": graph}
            ],
            "log": {"level": "WARNING"},
        },
        env={},
    )
    import logging

    logging.basicConfig(level=logging.WARNING)
    app = create_app(config, start_workers=kind != "bot-ingest-only")
    asyncio.run(serve_bot(config, app))


def wait_port(port: int, timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"server on {port} did not start")


def inbox_file(db: str) -> str:
    sys.path.insert(0, str(ROOT))
    from bot.store.inbox import inbox_path

    return str(inbox_path(Path(db)))


def inbox_rows(db: str, where: str = "1") -> int:
    import sqlite3

    with sqlite3.connect(inbox_file(db)) as conn:
        return int(conn.execute(f"SELECT count(*) FROM inbox WHERE {where}").fetchone()[0])


def unprocessed(db: str) -> int:
    return inbox_rows(db, "state = 'new'")


def wait_drained(db: str, limit: float) -> float:
    """Seconds after the load ends until the inbox worker has processed every delivery."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if unprocessed(db) == 0:
            return time.monotonic() - start
        time.sleep(0.1)
    return float("inf")


def catch_up(db: str, seconds: float) -> str:
    """How fast the worker works off the backlog a flood left, watched for `seconds`."""
    left = unprocessed(db)
    start = time.monotonic()
    while time.monotonic() - start < seconds and unprocessed(db):
        time.sleep(0.5)
    elapsed, done = time.monotonic() - start, left - unprocessed(db)
    return f"backlog {left} at the end of the load, then {done / elapsed:.0f} processed a second"


def parse_latency(text: str, pct: str) -> float:
    m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if not m:
        return float("nan")
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v


class Server:
    """One of the servers as a child process; `pause`/`resume` stop and continue it whole."""

    def __init__(
        self, kind: str, sync: str, graph_url: str, db: str, wrap: Sequence[str] = ()
    ) -> None:
        self.db = db
        self.port = free_port()
        self.proc = subprocess.Popen(
            [*wrap, sys.executable, __file__, "--serve", kind, "--port", str(self.port)]
            + ["--sync", sync, "--db", db, "--graph", graph_url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL if wrap else None,
        )
        wait_port(self.port, 120 if wrap else 15)

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM; then SIGKILL, as a supervisor would, if the bot has not exited (it works
        off its inbox for at most `shutdown_drain_seconds` first)."""
        self.resume()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def stored(self) -> int:
        return inbox_rows(self.db)


def wrk(
    port: int, seconds: int, connections: int, script: Path, requests: Path
) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script)]
        + [f"http://127.0.0.1:{port}/webhook"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "BENCH_REQUESTS": str(requests)},
    ).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": parse_latency(out, "50"),
        "p99_ms": parse_latency(out, "99"),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def saturation(
    kind: str, sync: str, args: argparse.Namespace, script: Path
) -> tuple[list[float], dict[str, list[float]]]:
    """Bare and bot alive side by side, loaded in turn for `--seconds` each, `--rounds` times.

    Only the server under load runs; the other is stopped (SIGSTOP), so it takes nothing from
    it: not the bot's inbox worker catching up while the bare handler is measured, not a
    checkpoint. This shared VM's speed moves by up to half from one second to the next
    (docs/benchmarks.md), so the pairs are short and adjacent, half of them bot first, and
    the median of their ratios is the figure. Returned with each turn's p99 per server.
    """
    ratios: list[float] = []
    p99s: dict[str, list[float]] = {"bare": [], "bot": []}
    per_turn = args.seconds * args.turn_rate
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.sqlite3")
        bare = Server("bare", "NORMAL", args.graph_url, db + ".bare")
        bot = Server(kind, sync, args.graph_url, db)
        acked = 0
        try:
            for i in range(args.rounds):
                bare.pause()
                bot.pause()
                # Comments never seen before, written while neither server runs.
                requests = write_requests(Path(tmp) / "turn.txt", per_turn, i * per_turn)
                results = {}
                for name, server in (("bare", bare), ("bot", bot))[:: 1 if i % 2 else -1]:
                    server.resume()
                    results[name] = wrk(
                        server.port, args.seconds, args.connections, script, requests
                    )
                    server.pause()
                b, t = results["bare"], results["bot"]
                acked += t["requests"] - t["non_2xx"]
                ratios.append(t["rps"] / b["rps"])
                p99s["bare"].append(b["p99_ms"])
                p99s["bot"].append(t["p99_ms"])
                print(
                    f"  bare {b['rps']:.0f} req/s (p50 {b['p50_ms']:.2f} ms,"
                    f" p99 {b['p99_ms']:.2f} ms); bot {t['rps']:.0f} req/s"
                    f" (p50 {t['p50_ms']:.2f} ms, p99 {t['p99_ms']:.2f} ms),"
                    f" ratio {ratios[-1]:.2f}; non-2xx {t['non_2xx']}",
                    flush=True,
                )
            bare.resume()
            bot.resume()
            backlog = catch_up(db, args.catch_up) if kind == "bot" else None
        finally:
            bare.stop()
            bot.stop()
        stored = bot.stored()
    print(f"  acknowledged {acked}, stored {stored}" + (f"; {backlog}" if backlog else ""))
    if stored < acked:
        sys.exit(f"LOST: {acked - stored} acknowledged deliveries are not in the inbox")
    return ratios, p99s


def instructions(
    kind: str, sync: str, args: argparse.Namespace, script: Path, requests: Path
) -> float:
    """CPU instructions per acknowledged webhook, all of the server's threads, under callgrind.

    Counted, not timed: the same figure on a quiet machine and a loaded one, so it compares
    builds where the wall-clock ratio cannot. Under valgrind the server is some 50 times
    slower, so wrk's 64 connections saturate it and group commits are as full as they get.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        wrap = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
        wrap.append(f"--callgrind-out-file={out}")
        server = Server(kind, sync, args.graph_url, str(Path(tmp) / "bench.sqlite3"), wrap)
        try:
            wrk(server.port, 2, args.connections, script, requests)  # warm up, not counted
            subprocess.run(
                ["callgrind_control", "-i", "on", str(server.proc.pid)],
                check=True,
                capture_output=True,
            )
            result = wrk(server.port, args.instructions, args.connections, script, requests)
            subprocess.run(
                ["callgrind_control", "-i", "off", str(server.proc.pid)],
                check=True,
                capture_output=True,
            )
        finally:
            server.stop()
        totals = re.findall(r"^(?:summary|totals): (\d+)", out.read_text(), re.M)
    return int(totals[-1]) / (result["requests"] - result["non_2xx"])


def run_one(
    kind: str, sync: str, args: argparse.Namespace, script: Path, requests: Path
) -> dict[str, float]:
    """One server alone, fresh, under `script` for `--paced-seconds`."""
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.sqlite3")
        server = Server(kind, sync, args.graph_url, db)
        try:
            result = wrk(server.port, args.paced_seconds, args.connections, script, requests)
            if kind == "bot":
                result["drained_s"] = wait_drained(db, args.paced_seconds * 20)
        finally:
            server.stop()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--seconds", type=int, default=1, help="length of each loaded turn")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--modes", default="NORMAL,FULL")
    ap.add_argument("--rounds", type=int, default=30, help="bare/bot pairs per configuration")
    ap.add_argument("--paced-seconds", type=int, default=8)
    ap.add_argument(
        "--instructions",
        type=int,
        default=0,
        metavar="SECONDS",
        help="instead: count CPU instructions per webhook under callgrind for SECONDS each,"
        " bare and ingest only (needs valgrind)",
    )
    ap.add_argument(
        "--catch-up", type=float, default=30, help="seconds to watch the backlog after a flood"
    )
    ap.add_argument(
        "--turn-rate",
        type=int,
        default=40000,
        help="fresh comments per second of a turn (more than either server takes here;"
        " a faster one would see some again, as duplicates)",
    )
    ap.add_argument(
        "--paced",
        type=int,
        default=200,
        help="also measure ack latency at about this many requests/s, a rate the worker"
        " keeps up with (0: skip)",
    )
    ap.add_argument(
        "--ingest-only", action="store_true", help="also measure with the inbox worker off"
    )
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--sync", default="NORMAL", help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    ap.add_argument("--graph", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.sync, args.db, args.graph)
        return
    if not shutil.which("wrk"):
        sys.exit("bench/ingest.py needs wrk: apt-get install wrk")
    work = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    script = work / "load.lua"
    script.write_text(lua_script())
    paced_script = work / "paced.lua"
    # Each connection waits between requests, so 64 connections offer about `paced`/s.
    paced_script.write_text(lua_script(1000 * args.connections / max(args.paced, 1)))
    paced_requests = write_requests(
        work / "paced.txt", int(args.paced_seconds * args.paced * 1.2) + 1000
    )
    graph_port = free_port()
    args.graph_url = f"http://127.0.0.1:{graph_port}"
    graph = subprocess.Popen(
        [sys.executable, __file__, "--serve", "graph", "--port", str(graph_port)],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_port(graph_port)
        if args.instructions:
            requests = write_requests(work / "counted.txt", args.instructions * 2000)
            bare = instructions("bare", "NORMAL", args, script, requests)
            for sync in args.modes.split(","):
                bot = instructions("bot-ingest-only", sync, args, script, requests)
                print(
                    f"instructions per acknowledged webhook, synchronous={sync}: bare {bare:,.0f},"
                    f" bot (ingest only) {bot:,.0f}, ratio {bare / bot:.3f}"
                )
            return
        # Saturation, then (`--paced`) ack latency at a rate the worker keeps up with.
        kinds = ["bot", "bot-ingest-only"] if args.ingest_only else ["bot"]
        for kind, sync in ((k, s) for s in args.modes.split(",") for k in kinds):
            label = "ingest only, worker off" if kind != "bot" else "worker on"
            ratios, p99s = saturation(kind, sync, args, script)
            spread = sorted(ratios)
            print(
                f"bot durable ingest ({label}, synchronous={sync}):"
                f" median ratio {statistics.median(ratios):.2f} of {len(ratios)} pairs"
                f" (lowest {spread[0]:.2f}, highest {spread[-1]:.2f});"
                + ";".join(
                    f" {name} p99 {statistics.median(v):.1f} ms in the median turn,"
                    f" {max(v):.1f} ms in the worst"
                    for name, v in (("bot", p99s["bot"]), ("bare", p99s["bare"]))
                ),
                flush=True,
            )
            if args.paced:
                for name, which in (("bare", "bare"), ("bot", kind)):
                    paced = run_one(which, sync, args, paced_script, paced_requests)
                    print(
                        f"  paced at ~{args.paced}/s offered, {name}: {paced['rps']:.0f} req/s,"
                        f" p50 {paced['p50_ms']:.2f} ms, p99 {paced['p99_ms']:.2f} ms"
                        + (
                            f", all processed {paced['drained_s']:.1f} s after the load"
                            if "drained_s" in paced
                            else ""
                        )
                    )
    finally:
        graph.send_signal(signal.SIGTERM)
        graph.wait(timeout=30)
        shutil.rmtree(work)
    print(
        f"({args.connections} connections, turns of {args.seconds} s, wrk -t1, loopback;"
        f" paced runs {args.paced_seconds} s)"
    )


if __name__ == "__main__":
    main()
