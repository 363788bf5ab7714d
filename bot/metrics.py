"""Counters and gauges, rendered in Prometheus' text format at /metrics.

Hand-written because the bot needs a handful of counters and prometheus_client would be the
heaviest dependency in the tree for it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

__all__ = ["Metrics"]

Labels = tuple[tuple[str, str], ...]


class Metrics:
    def __init__(self) -> None:
        self._counters: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._help: dict[str, str] = {}
        self._gauges: dict[str, Callable[[], float]] = {}

    def inc(self, name: str, amount: float = 1, help: str = "", **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        series = self._counters[name]
        series[key] = series.get(key, 0) + amount
        if help:
            self._help.setdefault(name, help)

    def get(self, name: str, **labels: str) -> float:
        return self._counters.get(name, {}).get(tuple(sorted(labels.items())), 0)

    def gauge(self, name: str, read: Callable[[], float], help: str = "") -> None:
        self._gauges[name] = read
        if help:
            self._help[name] = help

    def render(self) -> str:
        lines: list[str] = []
        for name in sorted(self._counters):
            full = f"bot_{name}_total"
            if name in self._help:
                lines.append(f"# HELP {full} {self._help[name]}")
            lines.append(f"# TYPE {full} counter")
            for labels, value in sorted(self._counters[name].items()):
                lines.append(f"{full}{_labels(labels)} {value:g}")
        for name in sorted(self._gauges):
            full = f"bot_{name}"
            if name in self._help:
                lines.append(f"# HELP {full} {self._help[name]}")
            lines.append(f"# TYPE {full} gauge")
            lines.append(f"{full} {self._gauges[name]():g}")
        return "\n".join(lines) + "\n"


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in labels
    )
    return "{" + inner + "}"
