"""The daemon's HTTP server under idle and slow connections (issue 11): bot/server.py.

In process, on loopback: the guard's rules (who is closed at the cap, which timer applies
when). As `bot run` in a child process with a low open-file limit: a signed webhook and
/healthz still answered while hundreds of idle sockets hold the port, a slowloris closed
after the header timeout, and one rate-limited line in the log instead of thousands.
Timeouts here are real socket timeouts of half a second, waited for on real sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from bot.config import ListenLimits
from bot.errors import ConfigError
from bot.server import ConnectionGuard, make_runner, plan_cap
from bot.webhook import sign
from tests.conftest import ig_comment, make_config

ROOT = Path(__file__).resolve().parent.parent
SECRET = "server-app-secret-42"
SHORT = ListenLimits(header_timeout=0.3, body_timeout=0.3, idle_timeout=0.3)
LONG = ListenLimits(header_timeout=60, body_timeout=60, idle_timeout=60)


# --- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ({"max_connections": 0}, "'listen.max_connections' must be a whole number from 1"),
        ({"header_timeout_seconds": 0}, "'listen.header_timeout_seconds' must be a number of"),
        ({"body_timeout_seconds": "10s"}, "'listen.body_timeout_seconds' must be a number of"),
        ({"idle_timeout_seconds": True}, "'listen.idle_timeout_seconds' must be a number of"),
        ({"idle_timeout": 5}, "unknown setting 'listen.idle_timeout': did you mean"),
    ],
)
def test_a_wrong_listen_setting_names_its_key(
    tmp_path: Path, listen: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config(tmp_path, listen=listen)


def test_listen_settings_have_safe_defaults_and_take_fractions(tmp_path: Path) -> None:
    assert make_config(tmp_path).listen_limits == ListenLimits()
    limits = make_config(tmp_path, listen={"header_timeout_seconds": 2.5}).listen_limits
    assert limits.header_timeout == 2.5 and limits.max_connections == 1000


# --- the guard in process -------------------------------------------------------------------


class Served:
    def __init__(self, guard: ConnectionGuard, port: int, release: asyncio.Event) -> None:
        self.guard = guard
        self.port = port
        self.release = release  # lets the /busy handlers answer
        self.writers: list[asyncio.StreamWriter] = []

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        before = self.guard.open
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers.append(writer)
        await until(lambda: self.guard.open > before or self.guard.open == self.guard.cap)
        return reader, writer

    async def close(self) -> None:
        for w in self.writers:
            w.close()
            with contextlib.suppress(ConnectionError):
                await w.wait_closed()


async def until(cond: Callable[[], bool], turns: int = 20_000) -> None:
    """Loop turns (each polls the sockets) until `cond`: an event, not a time window."""
    for _ in range(turns):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError("the server never got there")


async def closed(reader: asyncio.StreamReader, within: float = 5.0) -> bool:
    """True once the server closes (end of file or reset); False if it is still open."""
    try:
        while await asyncio.wait_for(reader.read(65536), within):
            pass
    except ConnectionError:
        return True
    except TimeoutError:
        return False
    return True


async def answer(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    await asyncio.wait_for(reader.readexactly(length), 5)
    return head.split(b"\r\n", 1)[0]


@contextlib.asynccontextmanager
async def served(limits: ListenLimits, cap: int) -> AsyncIterator[Served]:
    release = asyncio.Event()

    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    async def busy(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="done")

    app = web.Application()
    app.router.add_route("*", "/", ok)
    app.router.add_get("/busy", busy)
    guard = ConnectionGuard(limits, cap=cap)
    runner = make_runner(app, limits, shutdown_timeout=1)
    await runner.setup()
    try:
        s = Served(guard, await guard.listen(runner, "127.0.0.1", 0), release)
        try:
            yield s
        finally:
            await s.close()
    finally:
        release.set()
        await runner.cleanup()


GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


async def test_at_the_cap_a_new_connection_closes_the_one_that_waited_longest() -> None:
    async with served(LONG, cap=3) as s:
        idle = [await s.connect() for _ in range(3)]
        reader, writer = await s.connect()
        writer.write(GET)
        assert await answer(reader) == b"HTTP/1.1 200 OK"
        assert await closed(idle[0][0])
        assert s.guard.open == 3
        # The two newer idle ones are still open: each still gets an answer.
        for r, w in idle[1:]:
            w.write(GET)
            assert await answer(r) == b"HTTP/1.1 200 OK"


async def test_at_the_cap_a_silent_connection_goes_before_one_with_part_of_a_request_in() -> None:
    async with served(LONG, cap=3) as s:
        (r1, w1), (r2, _) = await s.connect(), await s.connect()
        w1.write(b"GET / HTTP/1.1\r\n")  # the oldest, but it has begun a request
        await until(lambda: len(s.guard._stirring) == 1)
        _, (r4, w4) = await s.connect(), await s.connect()
        assert await closed(r2)  # silent, and the oldest of the silent ones
        w1.write(b"Host: x\r\n\r\n")
        assert await answer(r1) == b"HTTP/1.1 200 OK"
        w4.write(GET)
        assert await answer(r4) == b"HTTP/1.1 200 OK"


async def test_a_connection_at_work_is_never_evicted_and_a_new_one_is_refused() -> None:
    async with served(LONG, cap=2) as s:
        busy = [await s.connect() for _ in range(2)]
        for _, w in busy:
            w.write(b"GET /busy HTTP/1.1\r\nHost: x\r\n\r\n")
        await until(lambda: s.guard.waiting == 0)
        reader, _ = await s.connect()
        assert await closed(reader)  # refused at once: every connection is at work
        s.release.set()
        for r, _ in busy:
            assert await answer(r) == b"HTTP/1.1 200 OK"


async def test_a_partial_head_is_closed_after_the_header_timeout() -> None:
    async with served(SHORT, cap=10) as s:
        reader, writer = await s.connect()
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        assert await closed(reader)
        reader, writer = await s.connect()
        writer.write(GET)  # a whole head in time is served
        assert await answer(reader) == b"HTTP/1.1 200 OK"


async def test_a_trickling_body_is_closed_after_the_body_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with served(SHORT, cap=10) as s:
        reader, writer = await s.connect()
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nab")

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                for _ in range(100):
                    writer.write(b"x")
                    await writer.drain()
                    await asyncio.sleep(0.05)  # the client's pace, not a wait in the test

        feeding = asyncio.create_task(trickle())
        assert await closed(reader)
        feeding.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeding
    # The handler's read failing there is the guard's doing, not an error with a traceback.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() -> None:
    async with served(SHORT, cap=10) as s:
        reader, writer = await s.connect()
        writer.write(GET)
        assert await answer(reader) == b"HTTP/1.1 200 OK"
        assert await closed(reader)
        assert s.guard.open == 0


def test_the_cap_keeps_the_reserve_and_asks_for_what_the_hard_limit_allows() -> None:
    reserve = 19 + 100 + 2 * 128 + 16
    # The machine: `ulimit -n 1024` sets soft and hard alike.
    assert plan_cap(1000, 1024, 1024, 19) == (1024, 1024 - reserve, reserve)
    # The usual systemd default (1024 soft, 524288 hard): the soft limit is raised.
    assert plan_cap(1000, 1024, 524288, 19) == (1000 + reserve, 1000, reserve)
    assert plan_cap(1000, 1024, 1200, 19) == (1200, 1200 - reserve, reserve)
    assert plan_cap(1000, 65536, 65536, 19) == (65536, 1000, reserve)  # never lowered


@given(
    wanted=st.integers(1, 10**6),
    soft=st.integers(0, 10**7),
    extra=st.integers(0, 10**7),
    open_now=st.integers(3, 5000),
)
def test_a_planned_cap_never_reaches_into_the_reserve(
    wanted: int, soft: int, extra: int, open_now: int
) -> None:
    hard = soft + extra
    target, cap, reserve = plan_cap(wanted, soft, hard, open_now)
    assert soft <= target <= hard
    assert cap <= wanted and cap + reserve <= target
    assert cap == wanted or target == hard  # short of wanted only when the hard limit says


# --- `bot run` with a low open-file limit -------------------------------------------------


def _limit(n: int) -> Callable[[], None]:
    def set_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    return set_limit


def start(
    tmp_path: Path, nofile: int, listen: dict[str, Any] | None = None
) -> tuple[subprocess.Popen[str], int]:
    settings = {
        "app_secret": SECRET,
        "verify_token": "verify-42",
        "listen": {"host": "127.0.0.1", "port": 0, **(listen or {})},
        "database": {"path": "bot.sqlite3"},
        "log": {"format": "text", "level": "INFO"},
        "accounts": [
            {
                "id": "17841400000000001",
                "platform": "instagram",
                "token": "server-token-42",
                "graph_base_url": "http://127.0.0.1:9",
            }
        ],
    }
    (tmp_path / "bot.yaml").write_text(json.dumps(settings))
    with (tmp_path / "daemon.log").open("a") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "--config", str(tmp_path / "bot.yaml"), "run"],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            preexec_fn=_limit(nofile),
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.communicate(timeout=30)
        return proc, 0
    return proc, int(json.loads(line)["port"])


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)


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


def get(port: int, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return int(resp.status), resp.read().decode()


def test_a_signed_webhook_is_answered_while_idle_sockets_outnumber_the_open_file_limit(
    tmp_path: Path,
) -> None:
    """The issue's attack, scaled down: more idle sockets than the daemon may open files."""
    nofile, idle = 448, 500
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < idle + 200:  # this process holds the idle sockets
        if hard != resource.RLIM_INFINITY and hard < idle + 200:
            pytest.skip(f"the open-file limit here ({hard}) is too low for the test")
        resource.setrlimit(resource.RLIMIT_NOFILE, (idle + 200, hard))
    proc, port = start(tmp_path, nofile)
    socks: list[socket.socket] = []
    try:
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(idle)]
        assert post(port, ig_comment("c1", "PRICING")) == 200
        status, body = get(port, "/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"
        _, metrics = get(port, "/metrics")
    finally:
        for s in socks:
            s.close()
        stop(proc)
    assert 'bot_http_connections_closed_total{reason="evicted"}' in metrics
    log = (tmp_path / "daemon.log").read_text()
    assert proc.returncode == 0, log[-3000:]
    assert "Too many open files" not in log
    lines = log.splitlines()
    capped = [x for x in lines if "connection limit" in x]
    assert 1 <= len(capped) <= 2, capped  # the first, and the count written at the stop
    # No flood: start-up and stop lines, and the cap's one (500 evictions, one line).
    assert len([x for x in lines if "migrated to schema" not in x]) < 20, lines


def test_a_slowloris_connection_is_closed_after_the_header_timeout(tmp_path: Path) -> None:
    short = {
        "header_timeout_seconds": 0.5,
        "body_timeout_seconds": 0.5,
        "idle_timeout_seconds": 0.5,
    }
    proc, port = start(tmp_path, 1024, short)
    try:
        with socket.create_connection(("127.0.0.1", port)) as slow:
            slow.sendall(b"POST /webhook HTTP/1.1\r\nHost: bot\r\nContent-Le")
            slow.settimeout(5)  # the bound on the wait, ten times the setting
            with contextlib.suppress(ConnectionResetError):
                assert slow.recv(1024) == b""
        assert post(port, ig_comment("c1", "PRICING")) == 200
    finally:
        stop(proc)
    assert proc.returncode == 0


def test_an_open_file_limit_with_no_room_for_connections_stops_start_up_in_one_line(
    tmp_path: Path,
) -> None:
    proc, port = start(tmp_path, 256)
    assert port == 0 and proc.returncode == 2
    err = (tmp_path / "daemon.log").read_text()
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("bot: the open-file limit (ulimit -n) is 256")
