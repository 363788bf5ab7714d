"""Plausible, unique, seed-deterministic ids in Meta's shapes.

Numeric ids look like Instagram-scoped ids and comment ids; mids and tokens are opaque
base64-ish strings. The same seed gives the same ids, so scenario runs are repeatable.
"""

from __future__ import annotations

import random
import string

__all__ = ["IdFactory"]

_OPAQUE = string.ascii_letters + string.digits + "-_"


class IdFactory:
    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)
        self._issued: set[str] = set()

    def _unique(self, make: str) -> str:
        while True:
            value = self._make(make)
            if value not in self._issued:
                self._issued.add(value)
                return value

    def _make(self, kind: str) -> str:
        r = self._rng
        if kind == "user":
            return str(r.randrange(10**15, 10**16 - 1) + 10**16)  # 17 digits, like an IGSID
        if kind == "comment":
            return "178" + "".join(r.choices(string.digits, k=14))
        if kind == "fb":
            return str(r.randrange(10**14, 10**15))
        if kind == "mid":
            return "m_" + "".join(r.choices(_OPAQUE, k=43))
        if kind == "token":
            return "".join(r.choices(_OPAQUE, k=64))
        if kind == "trace":
            return "A" + "".join(r.choices(string.ascii_letters + string.digits, k=22))
        raise ValueError(kind)

    def user(self) -> str:
        return self._unique("user")

    def comment(self) -> str:
        """An Instagram comment id (17 digits, starting 178 like real ones)."""
        return self._unique("comment")

    def fb_object(self) -> str:
        return self._unique("fb")

    def mid(self) -> str:
        return self._unique("mid")

    def token(self) -> str:
        return self._unique("token")

    def trace(self) -> str:
        """An fbtrace_id: Meta puts one in every error for support requests."""
        return self._make("trace")
