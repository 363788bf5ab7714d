"""Small typed readers for YAML values, each reporting a positioned problem when a value is
wrong and returning `BAD`, so one pass finds every mistake in a file (issue 3, item 6)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from enum import Enum
from typing import Any, Final, TypeVar

from bot.flows.model import YamlPath
from bot.flows.problems import Problem, Severity
from bot.flows.yamlpos import Located, format_path
from bot.policy import parse_duration

__all__ = [
    "BAD",
    "Ctx",
    "Reader",
    "boolean",
    "choice",
    "describe",
    "duration",
    "ident",
    "integer",
    "mapping",
    "scalar",
    "suggest",
    "text",
    "texts",
]

E = TypeVar("E", bound=Enum)


class _Bad:
    """Marks a value already reported as wrong; callers skip it."""

    def __repr__(self) -> str:
        return "BAD"


BAD: Final = _Bad()
_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")

Reader = Callable[["Ctx", Any, YamlPath], Any]


class Ctx:
    """Where the values come from and the problems found so far."""

    def __init__(self, file: str, located: Located) -> None:
        self.file = file
        self.loc = located
        self.problems: list[Problem] = []

    def report(
        self,
        path: YamlPath,
        message: str,
        *,
        at_key: bool = False,
        severity: Severity = Severity.ERROR,
    ) -> None:
        pos = self.loc.key_pos(path) if at_key else self.loc.pos(path)
        self.problems.append(
            Problem(self.file, pos.line, pos.column, format_path(path), message, severity)
        )


def suggest(word: str, known: Iterable[str]) -> str:
    """ "; did you mean keywords?" when a known word is close, else ""."""
    close = difflib.get_close_matches(word, sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def text(ctx: Ctx, value: Any, path: YamlPath) -> Any:
    """A non-empty string; a plain YAML scalar read as a number or bool keeps its text."""
    if isinstance(value, bool | int | float) and path in ctx.loc.raw:
        value = ctx.loc.raw[path]
    if not isinstance(value, str):
        ctx.report(path, f"expected text, got {describe(value)}")
        return BAD
    if not value.strip():
        ctx.report(path, "expected text, got an empty string")
        return BAD
    return value


def ident(ctx: Ctx, value: Any, path: YamlPath) -> Any:
    """An id: letters, digits, `_` and `-`, starting with a letter or digit."""
    value = text(ctx, value, path)
    if value is BAD:
        return BAD
    if not _IDENT.fullmatch(value):
        ctx.report(path, f"{value!r} is not a valid id (use letters, digits, _ and -)")
        return BAD
    return value


def integer(minimum: int) -> Reader:
    def read(ctx: Ctx, value: Any, path: YamlPath) -> Any:
        if not isinstance(value, int) or isinstance(value, bool):
            ctx.report(path, f"expected a whole number, got {describe(value)}")
            return BAD
        if value < minimum:
            ctx.report(path, f"expected a whole number of at least {minimum}, got {value}")
            return BAD
        return value

    return read


def boolean(ctx: Ctx, value: Any, path: YamlPath) -> Any:
    if not isinstance(value, bool):
        ctx.report(path, f"expected true or false, got {describe(value)}")
        return BAD
    return value


def _duration(ctx: Ctx, value: Any, path: YamlPath, allow_zero: bool) -> Any:
    if isinstance(value, str):
        try:
            d = parse_duration(value)
        except ValueError:
            pass
        else:
            if d > timedelta(0) or allow_zero:
                return d
            ctx.report(path, "expected a duration longer than zero")
            return BAD
    ctx.report(path, f"expected a duration like 30s, 15m, 24h or 7d, got {describe(value)}")
    return BAD


def duration(ctx: Ctx, value: Any, path: YamlPath) -> Any:
    return _duration(ctx, value, path, allow_zero=False)


def duration_or_zero(ctx: Ctx, value: Any, path: YamlPath) -> Any:
    return _duration(ctx, value, path, allow_zero=True)


def choice(options: Mapping[str, Any], *, upper: bool = False) -> Reader:
    """One of `options` (YAML spelling -> value); `upper` accepts any case."""

    def read(ctx: Ctx, value: Any, path: YamlPath) -> Any:
        key = value.upper() if upper and isinstance(value, str) else value
        if isinstance(key, str) and key in options:
            return options[key]
        names = ", ".join(options)
        hint = suggest(value, options) if isinstance(value, str) else ""
        ctx.report(path, f"expected one of {names}, got {describe(value)}{hint}")
        return BAD

    return read


def enum_choice(cls: type[E], exclude: Iterable[E] = ()) -> Reader:
    skip = set(exclude)
    return choice({str(m.value): m for m in cls if m not in skip})


def texts(ctx: Ctx, value: Any, path: YamlPath) -> Any:
    """One text or a non-empty list of texts, as a tuple."""
    if not isinstance(value, list):
        one = text(ctx, value, path)
        return BAD if one is BAD else (one,)
    if not value:
        ctx.report(path, "expected at least one item, got an empty list")
        return BAD
    items = [text(ctx, v, (*path, i)) for i, v in enumerate(value)]
    return BAD if any(i is BAD for i in items) else tuple(items)


def scalar(ctx: Ctx, value: Any, path: YamlPath) -> Any:
    if isinstance(value, dict | list):
        ctx.report(
            path, f"expected a single value (text, number, true/false), got {describe(value)}"
        )
        return BAD
    return value


def mapping(
    ctx: Ctx,
    value: Any,
    path: YamlPath,
    fields: Mapping[str, Reader],
    required: Iterable[str],
    what: str,
    elsewhere: Mapping[str, str] | None = None,
) -> dict[str, Any] | None:
    """Read a mapping against `fields`: unknown keys (with a suggestion), missing required
    keys and every bad value are reported; the good values are returned."""
    if not isinstance(value, dict):
        ctx.report(path, f"expected a mapping of {what} settings, got {describe(value)}")
        return None
    out: dict[str, Any] = {}
    for key, item in value.items():
        reader = fields.get(key)
        if reader is None:
            hint = suggest(key, fields)
            if not hint and elsewhere and key in elsewhere:
                hint = f" ({elsewhere[key]})"
            ctx.report((*path, key), f"unknown key for {what}{hint}", at_key=True)
            continue
        result = reader(ctx, item, (*path, key))
        if result is not BAD:
            out[key] = result
    for key in required:
        if key not in value:
            ctx.report(path, f"missing required key {key!r} ({what} needs it)")
    return out
