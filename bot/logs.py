"""Logs that never print a secret, never let a value start a line, never flood.

- Secrets are registered once at start-up; a filter masks them in every record, including
  exception text, so a token pasted into an error message by a library still never reaches
  a log.
- Every record is one line: the text format escapes control characters (CR and LF included,
  as `\\r`, `\\n`, `\\x1b`) in the message and the exception text alike, and the JSON format
  escapes the line breaks JSON allows raw (U+2028, U+2029, NEL). A sender id, a comment or
  a library's exception message comes from outside; with a raw newline it could write a
  forged, timestamped line (issue 12).
- A warning or error that repeats is written once per `REPEAT_INTERVAL` seconds; the next one
  written says how many were left out. asyncio logs a failed accept once per socket it tries,
  128 a turn (issue 11: 192 MB in 22 s), and a bad-signature flood would do the same.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

__all__ = ["setup_logging", "one_line", "OneLineFormatter", "RedactSecrets", "RepeatLimiter"]

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

REPEAT_INTERVAL = 10.0
_WHEN = ("created", "msecs", "relativeCreated")

# Library loggers held above DEBUG, whatever `log.level` says:
QUIET_LOGGERS = {
    # aiosqlite logs every call at DEBUG with its arguments: the SQL and its parameters,
    # i.e. users' message texts and opt-in tokens.
    "aiosqlite": logging.WARNING,
    # One INFO line per request with its request line: the handshake's query string holds
    # the verify token and challenge.
    "aiohttp.access": logging.WARNING,
    # Its DEBUG lines carry the raw bytes of requests it could not parse (internet noise).
    "aiohttp.server": logging.INFO,
    # Its DEBUG lines name the cookies it refused, values included.
    "aiohttp.internal": logging.INFO,
    # APScheduler logs each re-aim of the one wake-up job; that is noise, not news.
    "apscheduler": logging.WARNING,
}


# The C0 and C1 controls (CR, LF, ESC, NEL, ...) and the two Unicode line separators: every
# character Python's str.splitlines breaks at is among them.
_TEXT_ESCAPES = {
    code: {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}.get(code)
    or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    for code in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)
}
# JSON already escapes U+0000 to U+001F; these it leaves raw, and each splits a line for
# Python's str.splitlines or for some log viewers.
_JSON_ESCAPES = {code: f"\\u{code:04x}" for code in (*range(0x7F, 0xA0), 0x2028, 0x2029)}


def one_line(text: str) -> str:
    """`text` with every control character and line separator escaped."""
    return text.translate(_TEXT_ESCAPES)


class OneLineFormatter(logging.Formatter):
    """The standard formatter, then the whole record escaped into one line; a traceback's own
    line breaks become `\\n` too (`sed 's/\\\\n/\\n/g'` restores them for reading)."""

    def format(self, record: logging.LogRecord) -> str:
        return one_line(super().format(record))


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def _mask(self, text: str) -> str:
        for s in self._secrets:
            if s in text:
                text = text.replace(s, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        record.msg = self._mask(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self._mask(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


@dataclass(slots=True)
class _Window:
    start: float  # the record time of the one written
    left_out: int = 0
    last: logging.LogRecord | None = None


class RepeatLimiter(logging.Filter):
    """One record per `interval` for each repeating warning or error.

    Records repeat when they come from the same logger at the same level with the same
    message template (before its arguments) and exception type, so "refused (%d bytes)"
    repeats whatever the size. The next one written after the interval carries the count;
    a count nobody wrote by then is written on its own, with the last record left out, at
    the next record of any kind or when the handler closes. Time is the records' own
    creation time: the limiter reads no clock.
    """

    MAX_KEYS = 1024  # a bound, should some library log preformatted messages

    def __init__(self, interval: float = REPEAT_INTERVAL, level: int = logging.WARNING) -> None:
        super().__init__()
        self.interval = interval
        self.level = level
        self.emit: Callable[[logging.LogRecord], object] | None = None  # setup_logging's
        self._windows: dict[tuple[object, ...], _Window] = {}
        self._pending: set[tuple[object, ...]] = set()
        # Records come from other threads too (APScheduler's); handlers run filters unlocked.
        self._lock = threading.RLock()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_repeat_summary", False):
            return True
        with self._lock:
            return self._admit(record)

    def _admit(self, record: logging.LogRecord) -> bool:
        now = record.created
        key = _key(record) if record.levelno >= self.level else None
        if self._pending:
            self._flush(now, but=key)
        if key is None:
            return True
        window = self._windows.get(key)
        if window is not None and now - window.start < self.interval:
            window.left_out += 1
            window.last = record
            self._pending.add(key)
            return False
        if window is not None and window.left_out:
            took = now - window.start
            _append(record, f" [and {window.left_out} more like it in the last {took:.0f} s]")
        self._pending.discard(key)
        self._windows.pop(key, None)
        self._windows[key] = _Window(now)
        if len(self._windows) > self.MAX_KEYS:
            self._forget_oldest()
        return True

    def flush(self, now: float | None = None) -> None:
        """Write every count not yet written (`now=None`: all of them, as at close)."""
        with self._lock:
            self._flush(float("inf") if now is None else now)

    def _flush(self, now: float, but: tuple[object, ...] | None = None) -> None:
        for key in list(self._pending):
            window = self._windows[key]
            if key == but:  # the record at hand carries its own count
                continue
            if now - window.start < self.interval or window.last is None:
                continue
            self._pending.discard(key)
            last, n, took = window.last, window.left_out, window.last.created - window.start
            window.left_out, window.last = 0, None
            if self.emit is not None:
                # A record of its own, made now (so the log stays in time order).
                summary = logging.makeLogRecord(
                    {k: v for k, v in vars(last).items() if k not in _WHEN}
                )
                _append(summary, f" [repeated {n} times in the last {took:.0f} s]")
                setattr(summary, "_repeat_summary", True)  # noqa: B010
                self.emit(summary)

    def _forget_oldest(self) -> None:
        for key in list(self._windows)[: self.MAX_KEYS // 4]:
            if key not in self._pending:
                del self._windows[key]


def _key(record: logging.LogRecord) -> tuple[object, ...]:
    exc = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else None
    msg = record.msg if isinstance(record.msg, str) else type(record.msg).__name__
    return (record.name, record.levelno, msg, exc)


def _append(record: logging.LogRecord, suffix: str) -> None:
    record.msg = record.getMessage() + suffix
    record.args = None


class _Handler(logging.StreamHandler[TextIO]):
    """A stream handler that writes the limiter's last counts when it closes."""

    def __init__(self, stream: TextIO, repeats: RepeatLimiter) -> None:
        super().__init__(stream)
        self.repeats = repeats

    def close(self) -> None:
        self.repeats.flush()
        super().close()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            # The record's own creation time; formatting is not a clock read for the bot.
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        out.pop("_repeat_summary", None)
        if record.exc_text:
            out["exception"] = record.exc_text
        elif record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False).translate(_JSON_ESCAPES)


def setup_logging(
    fmt: str = "text",
    level: str = "INFO",
    secrets: Iterable[str] = (),
    *,
    stream: TextIO | None = None,
) -> logging.Handler:
    """The root logger's one handler, on stderr unless `stream` is given (tests)."""
    repeats = RepeatLimiter()
    handler = _Handler(stream or sys.stderr, repeats)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    # The limiter first: it keys records by their template, before the masking fills it in.
    handler.addFilter(repeats)
    handler.addFilter(RedactSecrets(secrets))
    repeats.emit = handler.handle
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    for name, floor in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(floor)
    return handler
