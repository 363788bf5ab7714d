"""Regular expressions over text anyone can post, in time linear in the text (the issue
"Untrusted input costs bounded time and memory", item 6).

Python's `re` backtracks: the keyword `(a+)+$` on a 28-character comment held the event loop for
8 s, doubling with each character. RE2 (the `google-re2` package) never backtracks, so a search
costs time proportional to the text whatever the pattern; the price is the syntax only a
backtracking engine can run: backreferences, lookahead and lookbehind, conditionals, atomic
groups and possessive repeats. Every regex the flows run on users' text comes through here.

Creators keep writing Python syntax. Python's own parser reads the pattern (so it means what it
always meant, and a typo gets Python's error), and the tree is written out as RE2 syntax
(bot/flows/regex_syntax.py) with Python's Unicode meaning of `\\w`, `\\d` and `\\s` (RE2's
are ASCII-only). `\\b` and `\\B` are Unicode-exact wherever the characters on both sides are
known from the pattern (`\\bцена\\b` at either end of a pattern, `order\\b` before `\\s`);
elsewhere (next to `.` or an optional part) RE2's ASCII word boundary stands in. A rewritten
edge boundary consumes the character beside it, so a match's span may be one character wider
than Python's: keywords only ask whether there is a match.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import re2

from bot.flows.regex_syntax import MAX_REPEAT, RegexRefused, to_re2

__all__ = ["MAX_REPEAT", "BoundedPattern", "RegexRefused", "compile_regex", "gates", "keyword"]

# Compiled program plus lazily built DFA states, per pattern (RE2's default is 8 MiB): enough
# for any keyword a creator writes, and a hostile text can't grow a pattern's cache past it.
_MAX_MEM: Final = 2 << 20
# A gate (several keywords in one pattern) gets more, and holds keywords up to this program
# size: RE2 needs room for about 20 DFA states of the program's size, or it falls back to its
# NFA, 20 times slower (50 bench keywords: 120 us a comment in one 68k-instruction gate at
# 8 MiB, 6 us in two gates of half the size).
_GATE_MEM: Final = 8 << 20
_GATE_PROGRAM: Final = 30_000


@dataclass(frozen=True, slots=True)
class BoundedPattern:
    """A compiled pattern whose every search takes time linear in the text."""

    source: str
    syntax: str  # the RE2 pattern it was written out as
    compiled: Any  # re2._Regexp

    def found(self, text: str) -> bool:
        return self.compiled.search(text) is not None

    def search(self, text: str) -> Any:
        """RE2's match object (`group`, `span`, ...), or None."""
        return self.compiled.search(text)


def _options(ignore_case: bool) -> Any:
    options = re2.Options()
    options.case_sensitive = not ignore_case
    options.max_mem = _MAX_MEM
    options.log_errors = False  # refusals are reported to the creator, not to stderr
    return options


def _re2_reason(message: str) -> str:
    if "repetition" in message:
        return (
            f"its repeats multiply past {MAX_REPEAT:,} (a count inside a counted group); "
            "use + or * for the inner one"
        )
    if "too large" in message or "too big" in message or "memory" in message:
        return "it is too large for this engine to run in bounded memory; split it in two"
    return f"this engine can't run it ({message})"


def compile_regex(pattern: str, *, ignore_case: bool = False) -> BoundedPattern:
    """Python regex syntax, compiled for RE2; raises `RegexRefused` with the reason."""
    syntax, top = to_re2(pattern, re.IGNORECASE if ignore_case else 0)
    try:
        compiled = re2.compile(syntax, _options(bool(top & re.IGNORECASE)))
    except re2.error as exc:
        message = exc.args[0] if exc.args else ""
        text = message.decode() if isinstance(message, bytes) else str(message)
        raise RegexRefused(pattern, _re2_reason(text)) from None
    return BoundedPattern(pattern, syntax, compiled)


@functools.lru_cache(maxsize=4096)
def keyword(pattern: str) -> BoundedPattern:
    """A creator's `match: regex` keyword: case-insensitive, run on folded text."""
    return compile_regex(pattern, ignore_case=True)


def _union(patterns: Sequence[BoundedPattern]) -> BoundedPattern | None:
    syntax = "|".join(f"(?:{p.syntax})" for p in patterns)
    options = _options(True)
    options.max_mem = _GATE_MEM
    try:
        compiled = re2.compile(syntax, options)
    except re2.error:
        return None
    return BoundedPattern("|".join(p.source for p in patterns), syntax, compiled)


def gates(patterns: Sequence[BoundedPattern]) -> list[tuple[BoundedPattern | None, list[int]]]:
    """`patterns` (case-insensitive keywords) in groups, each with one pattern that tells in
    one pass whether any of the group would match (most comments match none), or None for a
    group of one."""
    groups: list[list[int]] = []
    size = 0
    for i, p in enumerate(patterns):
        n = p.compiled.programsize
        if not groups or size + n > _GATE_PROGRAM:
            groups.append([])
            size = 0
        groups[-1].append(i)
        size += n
    out: list[tuple[BoundedPattern | None, list[int]]] = []
    for group in groups:
        gate = _union([patterns[i] for i in group]) if len(group) > 1 else None
        out.append((gate, group))
    return out
