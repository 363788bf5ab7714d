"""Durable-ingest throughput and ack latency, as a ratio to a bare aiohttp handler.

Both servers run in a child process on loopback and are loaded by the same generator, wrk
(C, one thread, keep-alive), because the aiohttp client itself caps near 11k requests/s on
these 2-core machines. Every request is a distinct, correctly signed Instagram comment
delivery of a fresh PRICING comment; the bot stores each one (WAL, group commit) before
answering, with its inbox worker processing deliveries at the same time, as in production: each
comment starts the pricing flow, whose private and public replies go to a stub Graph API in a
third process within the caps.

    python bench/ingest.py                  # NORMAL and FULL, 64 connections, 10 s each
    python bench/ingest.py --ingest-only    # also with the inbox worker off
    python bench/ingest.py --seconds 5 --rounds 1 --modes NORMAL --paced 0   # quick look

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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret"
ACCOUNT = "17841400000000001"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lua_script(n: int, pace_ms: float = 0.0) -> str:
    sys.path.insert(0, str(ROOT))
    from bot.webhook import sign

    reqs = []
    for i in range(n):
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
                                    "from": {"id": f"user-{i % 5000}", "username": f"u{i}"},
                                    "media": {"id": "reel-1", "media_product_type": "REELS"},
                                    "id": f"bench-{os.getpid()}-{i}",
                                    "text": os.environ.get("BENCH_TEXT", "PRICING please"),
                                },
                            }
                        ],
                    }
                ],
            },
            separators=(",", ":"),
        )
        sig = sign(SECRET.encode(), body.encode())
        reqs.append(f'{{[[{body}]], "{sig}"}}')
    return (
        "local reqs = {" + ",\n".join(reqs) + "}\n"
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


def wait_drained(db: str, limit: float) -> float:
    """Seconds after the load ends until the inbox worker has processed every delivery."""
    import sqlite3

    start = time.monotonic()
    while time.monotonic() - start < limit:
        with sqlite3.connect(inbox_file(db)) as conn:
            if conn.execute("SELECT count(*) FROM inbox WHERE state = 'new'").fetchone()[0] == 0:
                return time.monotonic() - start
        time.sleep(0.1)
    return float("inf")


def parse_latency(text: str, pct: str) -> float:
    m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if not m:
        return float("nan")
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v


def run_one(kind: str, sync: str, args: argparse.Namespace, script: Path) -> dict[str, float]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.sqlite3")
        child = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve",
                kind,
                "--port",
                str(port),
                "--sync",
                sync,
                "--db",
                db,
                "--graph",
                args.graph_url,
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            wait_port(port)
            out = subprocess.run(
                [
                    "wrk",
                    "-t1",
                    f"-c{args.connections}",
                    f"-d{args.seconds}s",
                    "--latency",
                    "-s",
                    str(script),
                    f"http://127.0.0.1:{port}/webhook",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            drained_s = wait_drained(db, args.seconds * 20) if kind == "bot" else None
        finally:
            child.send_signal(signal.SIGTERM)
            child.wait(timeout=60)
        stored = None
        if kind.startswith("bot"):
            import sqlite3

            with sqlite3.connect(inbox_file(db)) as conn:
                stored = conn.execute("SELECT count(*) FROM inbox").fetchone()[0]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    result = {
        "rps": rps,
        "p50_ms": parse_latency(out, "50"),
        "p99_ms": parse_latency(out, "99"),
        "requests": total,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }
    if stored is not None:
        result["stored"] = stored
    if drained_s is not None:
        result["drained_s"] = drained_s
    return result


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--modes", default="NORMAL,FULL")
    ap.add_argument("--rounds", type=int, default=3, help="bare/bot pairs per configuration")
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
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(lua_script(20000))
        script = Path(f.name)
    paced_script = Path(str(script) + ".paced.lua")
    if args.paced:
        # Each connection waits between requests, so 64 connections offer about `paced`/s.
        paced_script.write_text(lua_script(20000, 1000 * args.connections / args.paced))
    graph_port = free_port()
    args.graph_url = f"http://127.0.0.1:{graph_port}"
    graph = subprocess.Popen(
        [sys.executable, __file__, "--serve", "graph", "--port", str(graph_port)],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_port(graph_port)
        # Saturation: each configuration right after its own bare run, `--rounds` times,
        # because this shared machine's speed drifts by a third between minutes; the ratio
        # of each pair is what compares, and the median of those is the figure.
        kinds = ["bot", "bot-ingest-only"] if args.ingest_only else ["bot"]
        for kind, sync in ((k, s) for s in args.modes.split(",") for k in kinds):
            label = "ingest only, worker off" if kind != "bot" else "worker on"
            ratios = []
            for _ in range(args.rounds):
                bare = run_one("bare", "NORMAL", args, script)
                bot = run_one(kind, sync, args, script)
                ratios.append(bot["rps"] / bare["rps"])
                print(
                    f"  bare {bare['rps']:.0f} req/s (p50 {bare['p50_ms']:.2f} ms,"
                    f" p99 {bare['p99_ms']:.2f} ms); bot {bot['rps']:.0f} req/s"
                    f" (p50 {bot['p50_ms']:.2f} ms, p99 {bot['p99_ms']:.2f} ms),"
                    f" ratio {ratios[-1]:.2f}; non-2xx {bot['non_2xx']},"
                    f" acknowledged {bot['requests'] - bot['non_2xx']}, stored {bot['stored']}"
                    + (
                        f", all processed {bot['drained_s']:.1f} s after the load"
                        if "drained_s" in bot
                        else ""
                    )
                )
            print(
                f"bot durable ingest ({label}, synchronous={sync}):"
                f" median ratio {statistics.median(ratios):.2f} of {len(ratios)} rounds"
            )
            if args.paced:
                for name, which in (("bare", "bare"), ("bot", kind)):
                    paced = run_one(which, sync, args, paced_script)
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
        script.unlink()
        paced_script.unlink(missing_ok=True)
    print(f"({args.connections} connections, {args.seconds} s each, wrk -t1, loopback)")


if __name__ == "__main__":
    main()
