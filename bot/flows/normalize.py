"""Text folding for keyword matching: what makes "Pricing!!", "PRICING" and "pricíng" equal.

Folding is case-insensitive (casefold), width-insensitive (NFKC: "ｐｒｉｃｉｎｇ" is "pricing")
and accent-insensitive (NFKD, then nonspacing marks dropped). Words are runs of letters and
digits; punctuation and spaces separate them; each emoji is a word of its own, so "pricing🔥"
holds both "pricing" and "🔥", and a creator can still trigger on "🔥". Skin-tone modifiers,
variation selectors and joiners are dropped.

Speed matters (bench/match.py): ASCII text, most comments, takes a byte-table fast path that gives
the same result; other text goes through `str.translate` with tables that fold each distinct
character once and remember it.
"""

from __future__ import annotations

import unicodedata

__all__ = ["fold", "joined", "words"]

# ASCII: upper case to lower, letters and digits kept, every other byte a space.
_ASCII_TABLE = bytes(
    c + 32 if 65 <= c <= 90 else c if 48 <= c <= 57 or 97 <= c <= 122 else 32 for c in range(256)
)
_DROPPED = frozenset({"Mn", "Me"})


def _fold_char(ch: str) -> str:
    out = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", ch).casefold())
    return "".join(c for c in out if unicodedata.category(c) not in _DROPPED)


class _FoldTable(dict[int, str]):
    """code point -> folded text, filled on first sight (str.translate asks item by item)."""

    def __missing__(self, code: int) -> str:
        value = self[code] = _fold_char(chr(code))
        return value


class _WordTable(dict[int, str]):
    """code point -> folded letters and digits; an emoji padded with spaces; else a space."""

    def __missing__(self, code: int) -> str:
        out = []
        for c in _fold_char(chr(code)):
            if c.isalnum():
                out.append(c)
            elif unicodedata.category(c) == "So":
                out.append(f" {c} ")
            else:
                out.append(" ")
        value = self[code] = "".join(out)
        return value


_FOLD = _FoldTable()
_WORDS = _WordTable()


def fold(text: str) -> str:
    """Case-, width- and accent-folded text, punctuation kept (what regex keywords see)."""
    if text.isascii():
        return text.lower()
    # NFKC first so that composed forms (full-width, ligatures) fold as a whole.
    return unicodedata.normalize("NFC", unicodedata.normalize("NFKC", text).translate(_FOLD))


def words(text: str) -> tuple[str, ...]:
    """The folded words of `text`, in order; emoji are words of their own."""
    if text.isascii():
        return tuple(text.encode("ascii").translate(_ASCII_TABLE).decode("ascii").split())
    folded = unicodedata.normalize("NFKC", text).translate(_WORDS)
    return tuple(unicodedata.normalize("NFC", folded).split())


def joined(text: str) -> str:
    """The folded words joined by single spaces: what substring keywords are looked for in."""
    return " ".join(words(text))
