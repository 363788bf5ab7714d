"""The log as `bot run` sets it up (issue 12, and the rate limit of issue 11): one line per
record whatever a value from outside holds, no library writing SQL parameters or bodies at
any level, and a repeating error written once per interval with its count."""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st

from bot.config import Config
from bot.logs import JsonFormatter, OneLineFormatter, RepeatLimiter, setup_logging
from tests.conftest import ig_comment, ig_dm, post_signed, runtime

ROOT = Path(__file__).resolve().parent.parent
# A sender id as a signed webhook could carry it: a forged line after a newline, another
# after a Unicode line separator (which JSON leaves raw and str.splitlines breaks at).
FORGED = (
    "123\n2026-01-01 00:00:00 ERROR bot: forged"
    "\u20282026-01-01 00:00:01 ERROR bot: forged too\x1b[2K"
)
STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


Setup = Callable[..., io.StringIO]


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    """`setup_logging` as `bot run` calls it, on stderr; returns what its handler writes.
    The logging state comes back after the test."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    levels = {
        name: logging.getLogger(name).level
        for name in ("aiosqlite", "aiohttp.access", "aiohttp.server", "aiohttp.internal")
    }

    def setup(fmt: str, level: str, secrets: list[str] | None = None) -> io.StringIO:
        buf = io.StringIO()
        # In the test's own phase: pytest puts its own stderr back between phases.
        monkeypatch.setattr(sys, "stderr", buf)
        setup_logging(fmt, level, secrets or [])
        return buf

    yield setup
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in saved[0]:
        root.addHandler(h)
    root.setLevel(saved[1])
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def secrets(config: Config) -> list[str]:
    """What `bot run` registers (bot/cli.py)."""
    return [config.app_secret, config.verify_token, *(a.token for a in config.accounts)]


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_a_sender_id_with_line_breaks_cannot_write_a_line_of_its_own(
    bot: Any, logs: Setup, fmt: str
) -> None:
    stderr = logs(fmt, "INFO", secrets(bot.rt.config))
    assert await post_signed(bot.client, ig_comment("c1", "PRICING", user=FORGED)) == 200
    # A field name is logged as Meta sent it ("ignored ... event"): the same text there.
    unknown = ig_comment("c2", "PRICING")
    unknown["entry"][0]["changes"][0]["field"] = FORGED
    assert await post_signed(bot.client, unknown) == 200
    await bot.process()
    lines = stderr.getvalue().splitlines()  # every line break Python knows, U+2028 included
    assert not [x for x in lines if x.startswith("2026-01-01")]
    # An id is Meta's alphabet only: the forged sender id is refused, never used or logged.
    assert any("from.id is not an id" in x for x in lines), lines
    if fmt == "text":
        assert all(STAMP.match(x) for x in lines), lines
        # The field name was logged, escaped.
        assert any("123\\n2026-01-01 00:00:00 ERROR bot: forged\\u2028" in x for x in lines)
    else:
        records = [json.loads(x) for x in lines]
        assert any(FORGED in r["message"] for r in records)


async def test_at_debug_no_log_shows_a_users_text_or_token(
    client: TestClient[Any, Any], logs: Setup
) -> None:
    """aiosqlite logs each call's SQL parameters at DEBUG: the texts and tokens it stores."""
    rt = runtime(client)
    stderr = logs("text", "DEBUG", secrets(rt.config))
    text, token = "my card is 4111-1111-1111-1111", "MKT-user-token-7f3a9c"
    optin = ig_dm("m2", "x")
    optin["entry"][0]["messaging"][0].pop("message")
    optin["entry"][0]["messaging"][0]["optin"] = {
        "type": "notification_messages",
        "payload": "weekly",
        "notification_messages_token": token,
        "notification_messages_frequency": "WEEKLY",
    }
    assert await post_signed(client, ig_dm("m1", text)) == 200
    assert await post_signed(client, optin) == 200
    assert rt.worker is not None
    await rt.worker.drain()
    logging.getLogger("bot.test").debug("still at DEBUG")
    out = stderr.getvalue()
    assert "still at DEBUG" in out
    assert text not in out and token not in out
    assert "4111" not in out and "7f3a9c" not in out


# --- the formatters: one line, whatever the arguments ---------------------------------------


def _record(msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    rec = logging.LogRecord("bot.test", logging.WARNING, __file__, 1, msg, args or None, None)
    if exc is not None:
        rec.exc_info = (type(exc), exc, exc.__traceback__)
    return rec


@given(value=st.text(), problem=st.text())
def test_a_text_record_is_one_line_whatever_its_arguments(value: str, problem: str) -> None:
    fmt = OneLineFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    try:
        raise ValueError(problem)
    except ValueError as exc:
        out = fmt.format(_record("user %s said", value, exc=exc))
    assert len(out.splitlines()) == 1
    assert STAMP.match(out)


@given(value=st.text(), problem=st.text())
def test_a_json_record_is_one_line_and_keeps_the_value_exactly(value: str, problem: str) -> None:
    try:
        raise ValueError(problem)
    except ValueError as exc:
        out = JsonFormatter().format(_record("user %s said", value, exc=exc))
    assert len(out.splitlines()) == 1
    record = json.loads(out)
    assert record["message"] == f"user {value} said"
    assert record["exception"].endswith(f"ValueError: {problem}" if problem else "ValueError")


def test_control_characters_are_escaped_readably() -> None:
    out = OneLineFormatter("%(message)s").format(_record("a\r\nb\x1b[31mc\x00d\te\u2028f\x85"))
    assert out == "a\\r\\nb\\x1b[31mc\\x00d\\te\\u2028f\\x85"


# --- the repeat limiter -------------------------------------------------------------------


class _Sink:
    def __init__(self) -> None:
        self.limiter = RepeatLimiter(interval=10.0)
        self.lines: list[str] = []
        self.limiter.emit = self.handle

    def handle(self, record: logging.LogRecord) -> None:
        if self.limiter.filter(record):
            self.lines.append(record.getMessage())

    def log(self, at: float, msg: str, *args: object, level: int = logging.WARNING) -> None:
        rec = _record(msg, *args)
        rec.levelno, rec.created = level, at
        self.handle(rec)


def test_a_repeating_warning_is_written_once_per_interval_with_its_count() -> None:
    sink = _Sink()
    for i in range(1000):
        sink.log(100.0 + i * 0.005, "webhook refused (%d bytes)", i)
    assert sink.lines == ["webhook refused (0 bytes)"]
    sink.log(111.0, "webhook refused (%d bytes)", 7)
    assert sink.lines[1:] == ["webhook refused (7 bytes) [and 999 more like it in the last 11 s]"]


def test_a_count_nobody_wrote_is_written_by_the_next_record_or_at_close() -> None:
    sink = _Sink()
    for i in range(5):
        sink.log(100.0 + i, "accept failed: %s", "EMFILE")
    sink.log(109.0, "something else")  # the window is still open: nothing to say yet
    sink.log(115.0, "and another")
    assert sink.lines == [
        "accept failed: EMFILE",
        "something else",
        "accept failed: EMFILE [repeated 4 times in the last 4 s]",
        "and another",
    ]
    sink.log(120.0, "accept failed: %s", "EMFILE")
    sink.log(121.0, "accept failed: %s", "EMFILE")
    sink.limiter.flush()
    assert sink.lines[-2:] == [
        "accept failed: EMFILE",
        "accept failed: EMFILE [repeated 1 times in the last 1 s]",
    ]


def test_info_and_distinct_messages_are_never_held_back() -> None:
    sink = _Sink()
    for i in range(3):
        sink.log(100.0, "flow %s started", i, level=logging.INFO)
        sink.log(100.0, f"distinct warning {i}")
    assert len(sink.lines) == 6


def test_asyncios_failing_accept_loop_writes_one_line_not_thousands(tmp_path: Path) -> None:
    """A real asyncio server out of file descriptors: its accept loop logs every try (128 a
    loop turn, tried again every second). Through `setup_logging`: one line and a count."""
    script = textwrap.dedent(
        """
        import asyncio, resource
        from bot.logs import setup_logging

        setup_logging("text", "INFO")
        resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))

        async def hold(reader, writer):
            await reader.read()

        async def main():
            server = await asyncio.start_server(hold, "127.0.0.1", 0)
            print(server.sockets[0].getsockname()[1], flush=True)
            # Over two of asyncio's one-second retries: thousands of records on the old log.
            await asyncio.sleep(2.5)

        asyncio.run(main())
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(80)]
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        for s in socks:
            s.close()
    lines = [x for x in err.splitlines() if "out of system resource" in x]
    assert len(lines) == 2, err[-3000:]
    assert "Too many open files" in lines[0]
    assert re.search(r"\[repeated \d+ times in the last \d+ s\]", lines[1])


def test_setup_logging_quiets_the_libraries_that_log_parameters(logs: Setup) -> None:
    logs("text", "DEBUG")
    assert logging.getLogger("aiosqlite").getEffectiveLevel() >= logging.WARNING
    assert logging.getLogger("aiohttp.access").getEffectiveLevel() >= logging.WARNING
    assert logging.getLogger().getEffectiveLevel() == logging.DEBUG
