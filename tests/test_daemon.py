"""`bot run` as a real process: it answers signed webhooks, stops gracefully on SIGTERM with
every acknowledged delivery processed, and never prints a secret."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bot.webhook import sign
from tests.conftest import ig_comment, ig_dm

SECRET = "daemon-app-secret-42"
TOKEN = "EAAG-daemon-token-42"


def start(tmp_path: Path, extra: str = "") -> tuple[subprocess.Popen[str], int]:
    """Start `bot run`; its logs go to a file (a full pipe nobody reads would block it)."""
    (tmp_path / "bot.yaml").write_text(
        "accounts:\n"
        '  - {id: "17841400000000001", platform: instagram, graph_base_url: "http://127.0.0.1:9"}\n'
        "listen: {host: 127.0.0.1, port: 0}\n"
        "database: {path: bot.sqlite3}\n"
        "log: {format: json, level: DEBUG}\n" + extra
    )
    env = {
        **os.environ,
        "BOT_APP_SECRET": SECRET,
        "BOT_VERIFY_TOKEN": "verify-42",
        "BOT_TOKEN_17841400000000001": TOKEN,
    }
    with (tmp_path / "daemon.log").open("a") as log:  # the child keeps its own copy
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "--config", str(tmp_path / "bot.yaml"), "run"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    assert proc.stdout is not None
    ready = json.loads(proc.stdout.readline())  # the daemon's one line when it listens
    assert ready["ready"] is True
    return proc, int(ready["port"])


def post(port: int, payload: object) -> int:
    body = json.dumps(payload).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/webhook",
        data=body,
        headers={"X-Hub-Signature-256": sign(SECRET.encode(), body)},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return int(resp.status)


def test_the_daemon_stores_processes_and_stops_gracefully_without_printing_secrets(
    tmp_path: Path,
) -> None:
    proc, port = start(tmp_path)
    try:
        for i in range(20):
            assert post(port, ig_comment(f"c{i}", "PRICING", user=f"u{i}")) == 200
        assert post(port, ig_dm("m1", f"my token is {TOKEN}")) == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            assert json.loads(resp.read())["status"] == "ok"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    stderr = (tmp_path / "daemon.log").read_text()
    assert proc.returncode == 0, stderr
    with sqlite3.connect(tmp_path / "bot.inbox.sqlite3") as inbox:
        assert inbox.execute("SELECT state, count(*) FROM inbox GROUP BY state").fetchall() == [
            ("done", 21)
        ]
    with sqlite3.connect(tmp_path / "bot.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM comments").fetchone() == (20,)
    assert SECRET not in stderr and TOKEN not in stderr
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any(rec["message"] == "stopped" for rec in lines)  # structured, to the end


def test_a_stop_after_a_flood_leaves_the_backlog_in_the_inbox_for_the_next_start(
    tmp_path: Path,
) -> None:
    """SIGTERM waits at most `shutdown_drain_seconds` for the backlog (a flood's took minutes,
    past any supervisor's patience); what it leaves, the next start processes."""
    n = 3000
    proc, _ = start(tmp_path, "shutdown_drain_seconds: 0\n")
    # A backlog as a flood leaves it: rows the worker has not reached yet (written by another
    # process, so only its one-second poll would find them).
    bodies = [json.dumps(ig_comment(f"f{i}", "hi", user=f"u{i}")).encode() for i in range(n)]
    now_ms = int(time.time() * 1000)  # recent: the next start's pruner leaves them alone
    with sqlite3.connect(tmp_path / "bot.inbox.sqlite3", timeout=10) as inbox:
        inbox.executemany(
            "INSERT INTO inbox (received_at, body) VALUES (?, ?)", [(now_ms, b) for b in bodies]
        )
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 0
    with sqlite3.connect(tmp_path / "bot.inbox.sqlite3") as inbox:
        (left,) = inbox.execute("SELECT count(*) FROM inbox WHERE state = 'new'").fetchone()
    assert left > 0  # the batch under way at most, not the whole backlog
    lines = [
        json.loads(x) for x in (tmp_path / "daemon.log").read_text().splitlines() if x[:1] == "{"
    ]
    assert any(f"{left} left for the next start" in rec["message"] for rec in lines)

    proc, port = start(tmp_path)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            assert json.loads(resp.read())["status"] == "ok"
    finally:
        proc.send_signal(signal.SIGTERM)  # the default 5 s: enough for what is left here
        proc.communicate(timeout=30)
    with sqlite3.connect(tmp_path / "bot.inbox.sqlite3") as inbox:
        assert inbox.execute("SELECT state, count(*) FROM inbox GROUP BY state").fetchall() == [
            ("done", n)
        ]
    with sqlite3.connect(tmp_path / "bot.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM comments").fetchone() == (n,)
