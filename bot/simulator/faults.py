"""Fault injection: the failures the bot's sender must survive (POLICY.md §5, last rows).

Rates draw from a seeded generator, so a run repeats; `next()` scripts exact faults for the
next calls, which is what tests use. Settable at runtime from Python or `POST /_sim/faults`.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

__all__ = ["FaultKind", "Faults"]


class FaultKind(StrEnum):
    ERROR_5XX = "5xx"  # transient: code 1/2 with HTTP 500/503
    TIMEOUT = "timeout"  # hang longer than the client waits, then close
    THROTTLE = "throttle"  # code 4 / 613 with X-Business-Use-Case-Usage
    DROP = "drop"  # close the connection, nothing recorded
    ACCEPT_THEN_DROP = "accept_then_drop"  # recorded as sent, client sees a failure


_RATES = {
    FaultKind.ERROR_5XX: "error_rate",
    FaultKind.TIMEOUT: "timeout_rate",
    FaultKind.THROTTLE: "throttle_rate",
    FaultKind.DROP: "drop_rate",
    FaultKind.ACCEPT_THEN_DROP: "accept_drop_rate",
}
_SETTABLE = (
    "latency",
    "error_rate",
    "timeout_rate",
    "throttle_rate",
    "drop_rate",
    "accept_drop_rate",
    "throttle_code",
    "throttle_minutes",
    "hang_seconds",
)


@dataclass(slots=True)
class Faults:
    latency: float = 0.0  # seconds on the simulator's clock before each Graph answer
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    throttle_rate: float = 0.0
    drop_rate: float = 0.0
    accept_drop_rate: float = 0.0
    throttle_code: int = 4
    throttle_minutes: int = 5
    hang_seconds: float = 30.0  # real seconds a timeout holds the request (released on close)
    throttled_until: datetime | None = None
    seed: int = 0
    scripted: deque[FaultKind] = field(default_factory=deque)
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def next(self, kind: FaultKind | str, count: int = 1) -> None:
        """Make the next `count` Graph calls fail with `kind`, before any rate applies."""
        self.scripted.extend([FaultKind(kind)] * count)

    def throttle_for(self, now: datetime, duration: timedelta, code: int | None = None) -> None:
        """Throttle every call until `now + duration` (the header counts down to it)."""
        self.throttled_until = now + duration
        if code is not None:
            self.throttle_code = code

    def pick(self) -> FaultKind | None:
        """The fault for this call: scripted ones first, then one draw against the rates."""
        if self.scripted:
            return self.scripted.popleft()
        draw = self._rng.random()
        edge = 0.0
        for kind, attr in _RATES.items():
            edge += float(getattr(self, attr))
            if draw < edge:
                return kind
        return None

    def reset(self) -> None:
        fresh = Faults()
        for name in _SETTABLE:
            setattr(self, name, getattr(fresh, name))
        self.throttled_until = None
        self.scripted.clear()

    def update(self, changes: Mapping[str, Any], now: datetime) -> None:
        """Apply a `POST /_sim/faults` body; unknown keys raise ValueError naming the key."""
        if changes.get("reset"):
            self.reset()
        for key, value in changes.items():
            if key == "reset":
                continue
            if key in _SETTABLE:
                cast = int if key in ("throttle_code", "throttle_minutes") else float
                setattr(self, key, cast(value))
            elif key == "throttle_seconds":
                self.throttle_for(now, timedelta(seconds=float(value)))
            elif key == "next":
                for item in value:
                    self.next(item["kind"], int(item.get("count", 1)))
            else:
                raise ValueError(f"unknown fault setting {key!r}; known: {', '.join(_SETTABLE)}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in _SETTABLE}
        out["throttled_until"] = self.throttled_until.isoformat() if self.throttled_until else None
        out["next"] = [k.value for k in self.scripted]
        return out
