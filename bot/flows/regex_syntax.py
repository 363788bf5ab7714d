"""Python regex syntax written out as RE2 syntax (bot/flows/regex.py says why): Python's own
parser reads the pattern, so it means what it always meant and a typo gets Python's error;
the tree is written out with Python's Unicode meaning of `\\w`, `\\d`, `\\s` and `\\b`, and what
only a backtracking engine can run is refused with the reason."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Sequence
from enum import Enum
from typing import Any, Final

from bot.errors import BotError

__all__ = ["MAX_REPEAT", "RegexRefused", "to_re2"]

# The standard library's parser: private, but the exact grammar `re` accepts. typeshed has no
# stub for it, hence the import by name.
_parser: Any = importlib.import_module("re._parser")
_MAXREPEAT: Final = _parser.MAXREPEAT

# RE2 refuses counted repeats above 1,000.
MAX_REPEAT: Final = 1000
# Python's `\w` is `_` plus str.isalnum(), which is exactly categories L and N; its `\s` is
# str.isspace() (tests/flows/test_regex.py checks both against every code point).
_WORD: Final = r"\p{L}\p{N}_"
_SPACE_CHARS: Final = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680" + "".join(
    chr(c) for c in (*range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F, 0x3000)
)
_ASCII_SPACE: Final = "\t\n\x0b\x0c\r "
_NEVER: Final = r"[^\x00-\x{10ffff}]"


class RegexRefused(BotError):
    """A regular expression that is broken, or needs more than a linear-time engine runs;
    `reason` says why in a creator's words and what to write instead."""

    def __init__(self, pattern: str, reason: str) -> None:
        self.pattern = pattern
        self.reason = reason
        super().__init__(f"regex {pattern!r}: {reason}")


_WHY = "a backtracking engine, which one hostile comment can keep busy for minutes"
_REFUSED: Final = {
    "GROUPREF": (
        f"a backreference (\\1 or (?P=name)) needs {_WHY}; write the repeated part out, "
        "for example (?:aa|bb) instead of (a|b)\\1"
    ),
    "GROUPREF_EXISTS": (
        f"a conditional group (?(1)...) needs {_WHY}; write the alternatives out with |"
    ),
    "ASSERT": (
        f"a lookahead or lookbehind ((?=...), (?<=...)) needs {_WHY}; match the text itself "
        "(prices instead of price(?=s))"
    ),
    "ASSERT_NOT": (
        f"a negative lookahead or lookbehind ((?!...), (?<!...)) needs {_WHY}; match what you "
        "want instead, or send the exceptions to another flow with a higher priority"
    ),
    "ATOMIC_GROUP": (
        "an atomic group (?>...) only changes what a backtracking engine matches; write a "
        "plain group (?:...): this engine never backtracks"
    ),
    "POSSESSIVE_REPEAT": (
        "a possessive repeat (*+, ++, ?+) only changes what a backtracking engine matches; "
        "drop the second +: this engine never backtracks"
    ),
}


class _Side(Enum):
    """What a pattern piece puts next to a boundary: a word character, another character,
    nothing of the pattern (the text around the match), or it can't be told."""

    WORD = "word"
    OTHER = "other"
    OUTSIDE = "outside"
    UNKNOWN = "unknown"


_KNOWN = (_Side.WORD, _Side.OTHER)


def _is_word(ch: str, ascii_only: bool) -> bool:
    if ascii_only:
        return ch.isascii() and (ch.isalnum() or ch == "_")
    return ch.isalnum() or ch == "_"


def _lit(code: int) -> str:
    ch = chr(code)
    return ch if ch.isascii() and ch.isalnum() else f"\\x{{{code:x}}}"


def _chars(chars: Iterable[str]) -> str:
    """A class body for `chars`, runs of consecutive code points as ranges."""
    codes = sorted({ord(c) for c in chars})
    out, i = [], 0
    while i < len(codes):
        j = i
        while j + 1 < len(codes) and codes[j + 1] == codes[j] + 1:
            j += 1
        out.append(_lit(codes[i]) if i == j else f"{_lit(codes[i])}-{_lit(codes[j])}")
        i = j + 1
    return "".join(out)


class _Writer:
    """One pattern's parse tree written out as RE2 syntax."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern

    def refuse(self, reason: str) -> RegexRefused:
        return RegexRefused(self.pattern, reason)

    # --- what each piece puts at its edges -------------------------------------------------

    def first(self, items: Sequence[Any], flags: int) -> _Side:
        return self.side(items[0], flags, first=True) if items else _Side.UNKNOWN

    def last(self, items: Sequence[Any], flags: int) -> _Side:
        return self.side(items[-1], flags, first=False) if items else _Side.UNKNOWN

    def side(self, item: Any, flags: int, *, first: bool) -> _Side:
        op, av = item
        name = str(op)
        ascii_only = bool(flags & re.ASCII)
        if name == "LITERAL":
            return _Side.WORD if _is_word(chr(av), ascii_only) else _Side.OTHER
        if name == "IN":
            return self.class_side(av, ascii_only)
        if name == "SUBPATTERN":
            _, add, remove, sub = av
            inner = (flags | add) & ~remove
            return self.first(sub, inner) if first else self.last(sub, inner)
        if name == "BRANCH":
            sides = {self.first(b, flags) if first else self.last(b, flags) for b in av[1]}
            return sides.pop() if len(sides) == 1 else _Side.UNKNOWN
        if name in ("MAX_REPEAT", "MIN_REPEAT") and av[0] >= 1:
            return self.first(av[2], flags) if first else self.last(av[2], flags)
        if name == "AT" and str(av) in (
            ("AT_BEGINNING", "AT_BEGINNING_STRING") if not first else ("AT_END", "AT_END_STRING")
        ):
            return _Side.OTHER  # the text's start (end) counts as a non-word character
        return _Side.UNKNOWN

    def class_side(self, items: Sequence[Any], ascii_only: bool) -> _Side:
        negated = bool(items) and str(items[0][0]) == "NEGATE"
        sides = {self.member_side(op, av, ascii_only) for op, av in items[negated:]}
        if len(sides) != 1 or _Side.UNKNOWN in sides:
            return _Side.UNKNOWN
        side = sides.pop()
        if negated:
            return _Side.OTHER if side is _Side.WORD else _Side.UNKNOWN
        return side

    @staticmethod
    def member_side(op: Any, av: Any, ascii_only: bool) -> _Side:
        name = str(op)
        if name == "LITERAL":
            return _Side.WORD if _is_word(chr(av), ascii_only) else _Side.OTHER
        if name == "RANGE" and av[1] - av[0] <= 512:
            kinds = {_is_word(chr(c), ascii_only) for c in range(av[0], av[1] + 1)}
            if len(kinds) == 1:
                return _Side.WORD if kinds.pop() else _Side.OTHER
        if name == "CATEGORY":
            cat = str(av)
            if cat in ("CATEGORY_DIGIT", "CATEGORY_WORD"):
                return _Side.WORD
            if cat in ("CATEGORY_NOT_WORD", "CATEGORY_SPACE"):
                return _Side.OTHER
        return _Side.UNKNOWN

    # --- writing ---------------------------------------------------------------------------

    def seq(self, items: Sequence[Any], flags: int, left: _Side, right: _Side) -> str:
        out = []
        for i, item in enumerate(items):
            before = self.beside(items[i - 1 :: -1] if i else (), flags, left, first=False)
            after = self.beside(items[i + 1 :], flags, right, first=True)
            out.append(self.node(item, flags, before, after))
        return "".join(out)

    def beside(self, items: Sequence[Any], flags: int, end: _Side, *, first: bool) -> _Side:
        """The side the nearest of `items` shows; optional pieces (`s?`, `x*`) may be absent,
        so the one behind them counts too, and the answer is known only if all agree."""
        sides: set[_Side] = set()
        for op, av in items:
            if str(op) in ("MAX_REPEAT", "MIN_REPEAT") and av[0] == 0:
                sides.add(self.first(av[2], flags) if first else self.last(av[2], flags))
                continue
            sides.add(self.side((op, av), flags, first=first))
            break
        else:
            sides.add(end)
        return sides.pop() if len(sides) == 1 else _Side.UNKNOWN

    def node(self, item: Any, flags: int, left: _Side, right: _Side) -> str:
        op, av = item
        name = str(op)
        if name in _REFUSED:
            raise self.refuse(_REFUSED[name])
        if name == "LITERAL":
            return _lit(av)
        if name == "NOT_LITERAL":
            return f"[^{_lit(av)}]"
        if name == "ANY":
            return r"(?s:.)" if flags & re.DOTALL else r"[^\n]"
        if name == "IN":
            return self.char_class(av, flags)
        if name == "BRANCH":
            return "(?:" + "|".join(self.seq(b, flags, left, right) for b in av[1]) + ")"
        if name == "SUBPATTERN":
            _, add, remove, sub = av
            inner = (flags | add) & ~remove
            case = inner & re.IGNORECASE
            opening = "(?:" if case == flags & re.IGNORECASE else "(?i:" if case else "(?-i:"
            return opening + self.seq(sub, inner, left, right) + ")"
        if name in ("MAX_REPEAT", "MIN_REPEAT"):
            return self.repeat(av, flags, left, right, lazy=name == "MIN_REPEAT")
        if name == "AT":
            return self.at(str(av), flags, left, right)
        raise self.refuse(f"{name.lower()} is not supported")  # pragma: no cover

    def repeat(self, av: Any, flags: int, left: _Side, right: _Side, *, lazy: bool) -> str:
        lo, hi, sub = av
        if lo > MAX_REPEAT or (hi is not _MAXREPEAT and hi > MAX_REPEAT):
            n = lo if lo > MAX_REPEAT else hi
            raise self.refuse(
                f"repeats up to {n:,} times; this engine counts to {MAX_REPEAT:,} "
                "(write + or * for any number)"
            )
        once = hi is not _MAXREPEAT and hi <= 1
        inner = self.seq(
            sub, flags, left if once else _Side.UNKNOWN, right if once else _Side.UNKNOWN
        )
        if hi is _MAXREPEAT:
            count = "*" if lo == 0 else "+" if lo == 1 else f"{{{lo},}}"
        elif (lo, hi) == (0, 1):
            count = "?"
        else:
            count = f"{{{lo}}}" if lo == hi else f"{{{lo},{hi}}}"
        return f"(?:{inner}){count}{'?' if lazy else ''}"

    def at(self, code: str, flags: int, left: _Side, right: _Side) -> str:
        multiline = bool(flags & re.MULTILINE)
        if code == "AT_BEGINNING":
            return r"(?m:^)" if multiline else r"\A"
        if code == "AT_BEGINNING_STRING":
            return r"\A"
        if code == "AT_END":
            # Python's $ also matches before a final newline.
            return r"(?m:$)" if multiline else r"(?:\n?\z)"
        if code == "AT_END_STRING":
            return r"\z"
        negate = code == "AT_NON_BOUNDARY"
        if flags & re.ASCII:
            return r"\B" if negate else r"\b"  # RE2's boundary is ASCII: exact here
        return self.boundary(left, right, negate=negate)

    @staticmethod
    def boundary(left: _Side, right: _Side, *, negate: bool) -> str:
        word, other = f"[{_WORD}]", f"[^{_WORD}]"
        if left in _KNOWN and right in _KNOWN:
            return "" if (left is not right) != negate else _NEVER
        if left is _Side.OUTSIDE and right in _KNOWN:
            # The character before the match decides: it must differ from `right` (\b).
            differs = (right is _Side.WORD) != negate
            return rf"(?:\A|{other})" if differs else word
        if right is _Side.OUTSIDE and left in _KNOWN:
            differs = (left is _Side.WORD) != negate
            return rf"(?:\z|{other})" if differs else word
        return r"\B" if negate else r"\b"

    def char_class(self, items: Sequence[Any], flags: int) -> str:
        ascii_only = bool(flags & re.ASCII)
        negated = bool(items) and str(items[0][0]) == "NEGATE"
        members = list(items[negated:])
        plus: list[str] = []
        minus: list[str] = []  # "not X" members: a union of complements has no class syntax
        for op, av in members:
            name = str(op)
            if name == "LITERAL":
                plus.append(_lit(av))
            elif name == "RANGE":
                plus.append(f"{_lit(av[0])}-{_lit(av[1])}")
            elif name == "CATEGORY":
                cat = str(av)
                if cat == "CATEGORY_DIGIT":
                    plus.append("0-9" if ascii_only else r"\p{Nd}")
                elif cat == "CATEGORY_NOT_DIGIT":
                    plus.append(r"\D" if ascii_only else r"\P{Nd}")
                elif cat == "CATEGORY_WORD":
                    plus.append("0-9A-Za-z_" if ascii_only else _WORD)
                elif cat == "CATEGORY_NOT_WORD":
                    if ascii_only:
                        plus.append(r"\W")
                    else:
                        minus.append(_WORD)
                elif cat == "CATEGORY_SPACE":
                    plus.append(_chars(_ASCII_SPACE if ascii_only else _SPACE_CHARS))
                elif cat == "CATEGORY_NOT_SPACE":
                    minus.append(_chars(_ASCII_SPACE if ascii_only else _SPACE_CHARS))
        if not minus:
            return f"[{'^' if negated else ''}{''.join(plus)}]" if plus or negated else _NEVER
        if not negated:
            parts = ([f"[{''.join(plus)}]"] if plus else []) + [f"[^{m}]" for m in minus]
            return "(?:" + "|".join(parts) + ")"
        if all(m != _WORD for m in minus):
            # [^\S\n]: white space that no other member matches, spelt out.
            spaces = _ASCII_SPACE if ascii_only else _SPACE_CHARS
            keep = [c for c in spaces if not _in_members(c, members, ascii_only)]
            return f"[{_chars(keep)}]" if keep else _NEVER
        raise self.refuse(
            "a negated class holding \\W, such as [^\\W\\d], has no form this engine runs; "
            "list the characters you want instead, such as [a-z]"
        )


def _in_members(ch: str, members: Sequence[Any], ascii_only: bool) -> bool:
    """Whether a non-negated member other than \\S matches `ch` (white space has no case)."""
    for op, av in members:
        name, code = str(op), ord(ch)
        if name == "LITERAL" and av == code:
            return True
        if name == "RANGE" and av[0] <= code <= av[1]:
            return True
        if name == "CATEGORY":
            cat = str(av)
            if cat == "CATEGORY_SPACE":
                return True
            digit = ch.isdecimal() and (ch.isascii() or not ascii_only)
            if cat == "CATEGORY_DIGIT" and digit or cat == "CATEGORY_NOT_DIGIT" and not digit:
                return True
            if cat == "CATEGORY_WORD" and _is_word(ch, ascii_only):
                return True
    return False


def to_re2(pattern: str, flags: int) -> tuple[str, int]:
    """`pattern` in RE2 syntax, and the flags left in force at its top (IGNORECASE...)."""
    try:
        tree = _parser.parse(pattern, flags)
    except re.error as exc:
        raise RegexRefused(pattern, f"not a valid regular expression: {exc}") from None
    except (OverflowError, RecursionError):
        raise RegexRefused(pattern, "too large or too deeply nested") from None
    top = tree.state.flags
    return _Writer(pattern).seq(list(tree), top, _Side.OUTSIDE, _Side.OUTSIDE), top
