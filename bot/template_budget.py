"""A budget for every template render: steps, text and time (the issue "Untrusted input costs
bounded time and memory", item 7).

One template froze the daemon for 20 s on a long comment (nested loops over its text), another
took it from 49 MB to 1,098 MB (`replace` and format widths on a 1,008-character comment), and
both again after every restart, on the stored delivery. So each render gets a budget, and
going over it is a `TemplateFailure` like any other: the message is not sent, and the send log
says why.

- steps: every loop turn, call (macros, methods), filter and include costs one, and each item a
  filter walks (`sort`, `join`, `map`...); `MAX_STEPS` of them is far beyond what a message
  needs (a shipped template takes at most 2).
- text: everything written, and every string a filter, method or operator builds, is counted
  before it is built where it could be larger than its input (`replace`, `center`, `indent`,
  `wordwrap`, `format` and `%` widths, `join`, `~`, `+`, `*`), so no string past `MAX_TEXT`
  characters ever exists.
- depth: macros and includes nest at most `MAX_DEPTH` deep (`recursive` loops are refused when
  the template is compiled).
- time: checked at each step and each write against `MAX_SECONDS`, a backstop for what costs
  time without steps (a sort of 100,000 items).

The budget and the size bounds live here; the checks are generated into the template code and
run in the sandbox's hooks (bot/template_sandbox.py). The budget is a context variable, so a
template rendered outside `TemplateSet.render` (no budget set) runs as before.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

from jinja2.exceptions import SecurityError
from jinja2.utils import Namespace

from bot.clock import SystemClock

__all__ = [
    "BUDGET",
    "COUNT_ARGS",
    "FILTER_SIZES",
    "MAX_DEPTH",
    "MAX_SECONDS",
    "TIMER",
    "timed_by",
    "MAX_STEPS",
    "MAX_TEXT",
    "MAX_EXPONENT",
    "MAX_INT_BITS",
    "MAX_SEQUENCE",
    "STR_METHODS",
    "TEXT_FILTERS",
    "WALKING_FILTERS",
    "OverBudget",
    "RenderBudget",
    "budget",
    "join_size",
    "percent_size",
    "text_size",
]

MAX_STEPS: Final = 10_000
MAX_TEXT: Final = 64 * 1024  # characters; a DM is at most 2,000 (Messenger), 1,000 bytes (IG)
# A backstop for work between steps that nothing else counts: every hostile template
# bench/render.py knows stops on steps, text or depth within 3 ms, and a shipped template
# renders in about 11 us. Counted in the thread's CPU seconds, not wall time: 20 ms of wall
# time dropped real messages on a busy machine (the render was waiting for a CPU, not
# working), and no message may depend on how busy the machine is. Read every
# `_CLOCK_EVERY` steps (a CPU-time read is a system call, about 0.8 us).
MAX_SECONDS: Final = 0.100
_CLOCK_EVERY: Final = 32
# Macros and includes calling themselves: Python's recursion limit would stop them, but at
# about 1,000 frames, and Jinja then rewrites every frame of the traceback (95 ms measured).
MAX_DEPTH: Final = 25
# The sandbox caps range() at 100,000 items; `*` and `+` on sequences get the same cap.
MAX_SEQUENCE: Final = 100_000
MAX_EXPONENT: Final = 64
MAX_INT_BITS: Final = 4096


class OverBudget(Exception):
    """A render went over its budget; `reason` says which, in a creator's words."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class RenderBudget:
    """What one render may still spend. Mutable: one per render, never shared."""

    __slots__ = ("_deadline", "_timer", "_until_clock", "depth", "steps", "text")

    def __init__(
        self,
        timer: Callable[[], float],
        *,
        steps: int = MAX_STEPS,
        text: int = MAX_TEXT,
        seconds: float = MAX_SECONDS,
    ) -> None:
        self._timer = timer
        self._deadline = timer() + seconds
        self._until_clock = _CLOCK_EVERY
        self.steps = steps
        self.text = text
        self.depth = 0

    def enter(self) -> None:
        self.tick()
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise OverBudget(f"macros or includes nested more than {MAX_DEPTH} deep")

    def leave(self) -> None:
        self.depth -= 1

    def tick(self, steps: int = 1) -> None:
        self.steps -= steps
        if self.steps < 0:
            raise OverBudget(f"stopped after {MAX_STEPS:,} loop steps")
        self.clock()

    def clock(self) -> None:
        self._until_clock -= 1
        if self._until_clock > 0:
            return
        self._until_clock = _CLOCK_EVERY
        if self._timer() > self._deadline:
            raise OverBudget(f"took more than {MAX_SECONDS * 1000:.0f} ms of CPU time")

    def room(self, size: int, what: str = "output") -> None:
        """Refuse, before it is built, a string of `size` characters the budget can't hold
        (`what`: a list, held by reference, would be that long when printed)."""
        if size > self.text:
            raise OverBudget(f"{what} over {MAX_TEXT // 1024} KB")

    def charge(self, size: int) -> None:
        self.room(size)
        self.text -= size
        self.clock()


BUDGET: contextvars.ContextVar[RenderBudget | None] = contextvars.ContextVar(
    "template_render_budget", default=None
)


# The CPU-time reading renders are timed by: the engine sets its clock's (a VirtualClock's
# counts none, so `bot simulate` repeats exactly); anything else renders on the thread's own.
TIMER: contextvars.ContextVar[Callable[[], float]] = contextvars.ContextVar(
    "template_render_timer", default=SystemClock().thread_time
)


class timed_by:  # noqa: N801 - used as `with timed_by(...)`, like a function
    """Renders inside the block are timed by `timer` (the engine's clock's `thread_time`)."""

    def __init__(self, timer: Callable[[], float]) -> None:
        self._timer = timer
        self._token: contextvars.Token[Callable[[], float]] | None = None

    def __enter__(self) -> None:
        self._token = TIMER.set(self._timer)

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None
        TIMER.reset(self._token)


class budget:  # noqa: N801 - used as `with budget(...)`, like a function
    """Render under `RenderBudget(timer)` inside the block."""

    def __init__(self, timer: Callable[[], float]) -> None:
        self._budget = RenderBudget(timer)
        self._token: contextvars.Token[RenderBudget | None] | None = None

    def __enter__(self) -> RenderBudget:
        self._token = BUDGET.set(self._budget)
        return self._budget

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None
        BUDGET.reset(self._token)


# --- sizes, estimated before anything is built ---------------------------------------------


def text_size(value: Any, limit: int) -> int:
    """An upper bound on len(str(value)), exact for strings; stops counting past `limit`
    (a list of 100,000 references to one long string is a few bytes until printed)."""
    if isinstance(value, str | bytes):
        return len(value) * (1 if isinstance(value, str) else 4)
    if isinstance(value, bool | int | float | complex) or value is None:
        return 64 if not isinstance(value, int) else value.bit_length() // 3 + 2
    if isinstance(value, Namespace):
        value = dict(value._Namespace__attrs)
    items: Iterable[Any]
    if isinstance(value, Mapping):
        items = (x for kv in value.items() for x in kv)
    elif isinstance(value, list | tuple | set | frozenset):
        items = value
    else:
        return 256  # a function, macro or loop object: its repr
    total = 2
    for item in items:
        # repr() of a string in a container: quotes, and at most 4 characters for one
        total += 4 + (4 * len(item) if isinstance(item, str) else text_size(item, limit - total))
        if total > limit:
            break
    return total


def _replace_size(s: str | bytes, old: Any, new: Any, count: Any = -1) -> int:
    if not isinstance(old, str | bytes) or not isinstance(new, str | bytes):
        return len(s)
    n = len(s) + 1 if not old else s.count(old)  # type: ignore[arg-type]
    if isinstance(count, int) and count >= 0:
        n = min(n, count)
    return len(s) + n * max(len(new) - len(old), 0)


def _digits(fmt: str, i: int) -> tuple[int, int]:
    """The number at `i` (0 if none) and the index after it; `*` takes it from the arguments,
    which no estimate can bound."""
    start = i
    while i < len(fmt) and fmt[i].isdigit():
        i += 1
    if i < len(fmt) and fmt[i] == "*":
        raise SecurityError("a width taken from an argument (%*s) in a message template")
    return int(fmt[start:i] or 0), i


def _percent_widths(fmt: str) -> Iterator[int]:
    """Width plus precision of each %-conversion in `fmt`. A plain scan, not a regex: `fmt`
    can be a user's text, and `%(` without `)` made a regex quadratic."""
    i = fmt.find("%")
    while i >= 0:
        i += 1
        if fmt.startswith("(", i):
            close = fmt.find(")", i)
            if close < 0:
                return  # `%` then raises "incomplete format key"
            i = close + 1
        while i < len(fmt) and fmt[i] in "#0 +-":
            i += 1
        width, i = _digits(fmt, i)
        precision = 0
        if fmt.startswith(".", i):
            precision, i = _digits(fmt, i + 1)
        yield width + precision
        i = fmt.find("%", i + 1)  # past the conversion letter (or the second % of %%)


def percent_size(fmt: str, args: Any) -> int:
    """Upper bound on len(fmt % args): each conversion is at most its width, its precision,
    the longest argument and a float's 310 digits."""
    values = list(args.values()) if isinstance(args, Mapping) else args
    values = values if isinstance(values, tuple | list) else [values]
    longest = max((text_size(v, MAX_TEXT) for v in values), default=0)
    return len(fmt) + sum(w + longest + 310 for w in _percent_widths(fmt))


# --- bounds for the methods and filters that can outgrow their input ----------------------


def _width_size(s: Any, width: Any = 0, *_: Any) -> int:
    return max(len(s), width if isinstance(width, int) else 0)


def join_size(sep: Any, items: Sequence[Any]) -> int:
    return sum(text_size(x, MAX_TEXT) for x in items) + len(sep) * max(len(items) - 1, 0)


STR_METHODS: Final[Mapping[str, Callable[..., int]]] = {
    "replace": _replace_size,
    "center": _width_size,
    "ljust": _width_size,
    "rjust": _width_size,
    "zfill": _width_size,
    "expandtabs": lambda s, tabsize=8: (
        len(s)
        + s.count("\t" if isinstance(s, str) else b"\t")
        * (tabsize if isinstance(tabsize, int) else 8)
    ),
}


def _indent_size(s: Any, width: Any = 4, first: Any = False, blank: Any = False) -> int:
    text = str(s)
    w = len(width) if isinstance(width, str) else width if isinstance(width, int) else 4
    return len(text) + (text.count("\n") + 1) * max(w, 0)


def _wordwrap_size(
    s: Any,
    width: Any = 79,
    break_long_words: Any = True,
    wrapstring: Any = None,
    break_on_hyphens: Any = True,
) -> int:
    return len(str(s)) * (1 + len(wrapstring if isinstance(wrapstring, str) else "\n"))


def _filter_replace_size(s: Any, old: Any, new: Any, count: Any = None) -> int:
    return _replace_size(str(s), str(old), str(new), -1 if count is None else count)


def _center_size(value: Any, width: Any = 80) -> int:
    return _width_size(str(value), width)


# Filters whose output can outgrow their input: a bound on it, from the same arguments.
FILTER_SIZES: Final[Mapping[str, Callable[..., int]]] = {
    "replace": _filter_replace_size,
    "center": _center_size,
    "indent": _indent_size,
    "wordwrap": _wordwrap_size,
    "format": lambda value, *args, **kwargs: percent_size(str(value), kwargs or args),
}
# Filters that turn their input into text: at most this many characters per input character.
TEXT_FILTERS: Final[Mapping[str, int]] = {
    "string": 1,
    "pprint": 2,
    "tojson": 6,
    "urlencode": 12,
    "escape": 6,
    "e": 6,
    "forceescape": 6,
    "safe": 1,
    "xmlattr": 6,
    "urlize": 4,
    "title": 3,
    "capitalize": 3,
    "upper": 3,
    "lower": 3,
    "trim": 1,
    "striptags": 1,
    "truncate": 1,
    "wordcount": 1,
    "list": 1,
}
# Filters that walk their whole input in one call: one step per item, counted first (a sort of
# 100,000 items held the loop 51 ms between two steps).
WALKING_FILTERS: Final = frozenset(
    {
        "batch", "dictsort", "groupby", "items", "join", "list", "map", "max", "min",
        "pprint", "reject", "rejectattr", "reverse", "select", "selectattr", "slice", "sort",
        "string", "sum", "tojson", "unique",
    }
)  # fmt: skip
# Filters that build sequences of a requested length.
COUNT_ARGS: Final[Mapping[str, int]] = {"batch": 1, "slice": 1}
