"""YAML that once crashed or stalled the bot, with where and why each is now refused: shared
by the composer's tests, `bot check`'s and the hot reload's."""

from __future__ import annotations

from typing import NamedTuple


class Hostile(NamedTuple):
    text: str
    line: int
    column: int
    words: str


def laughs(levels: int, per: int = 10) -> str:
    """The "billion laughs": each anchor lists the previous one `per` times."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * per) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * per) + "]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nflows: *a{levels - 1}\n"


HOSTILE = {
    "recursive alias": Hostile(
        "flows: &x [*x]\n", 1, 12, "the alias *x refers to the value that contains it"
    ),
    "recursive mapping": Hostile(
        "a: &m {b: {c: *m}}\n", 1, 15, "the alias *m refers to the value that contains it"
    ),
    "5,000 levels": Hostile(
        "flows: " + "[" * 5000 + "]" * 5000 + "\n", 1, 71, "values nested more than 64 levels deep"
    ),
    "deep block mapping": Hostile(
        "".join("  " * i + f"k{i}:\n" for i in range(70)),
        65,
        129,
        "values nested more than 64 levels deep",
    ),
    "a chain of aliases": Hostile(
        "a0: &a0 [x]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 80)),
        64,
        12,
        "values nested more than 64 levels deep through the alias *a62",
    ),
    "billion laughs": Hostile(
        laughs(10), 6, 10, "the alias *a4 makes the document more than 200,000 values"
    ),
    "a huge file": Hostile(
        "flows:\n" + "  # padding\n" * 200_000, 174_764, 2, "the file is larger than 2 MiB"
    ),
}
