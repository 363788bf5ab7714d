"""YAML that people write, parsed within bounds: the one composer every file the bot reads goes
through (flows, scenarios, bot.yaml, policy profiles).

PyYAML's own composer recurses once per nesting level (5,000 levels: RecursionError), lets an
alias point into the value that holds it (`&x [*x]`: a structure that contains itself, which
every walker then follows for ever), and lets aliases of aliases multiply ("billion laughs":
ten levels of ten took `bot check` past 30 s and 2.9 GB). This composer builds the same node
graph from the same parser events, without recursion, and refuses a file that is too big,
nests too deep (aliases included), refers to itself, or expands past a number of values, each
refusal with the line and column where the limit was crossed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml
from yaml.composer import ComposerError
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

__all__ = [
    "FLOW_LIMITS",
    "PROFILE_LIMITS",
    "SCENARIO_LIMITS",
    "SETTINGS_LIMITS",
    "Limits",
    "YamlLimitError",
    "compose",
    "load",
    "read_text",
]


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds for one kind of file; `what` names it in refusals ("a flow file")."""

    what: str
    max_bytes: int
    max_depth: int
    max_values: int


# Far above what people write: the shipped flow files are at most 2.2 KB, nest 7 levels and
# hold under 300 values. `bot check` takes about 4 s per MB of flows on these machines, so the
# byte and value caps keep the worst file near the cost of an honest large one.
_WRITTEN = {"max_bytes": 2 << 20, "max_depth": 64, "max_values": 200_000}
FLOW_LIMITS = Limits("a flow file", **_WRITTEN)
SETTINGS_LIMITS = Limits("a settings file", **_WRITTEN)
PROFILE_LIMITS = Limits("a policy profile", **_WRITTEN)
# Scenarios are often generated: bench/simulate.py's month for 10,000 contacts is 1.4 MiB
# and 175,000 values.
SCENARIO_LIMITS = Limits("a scenario", max_bytes=64 << 20, max_depth=64, max_values=5_000_000)


class YamlLimitError(ValueError):
    """The text is refused before it is used; `line` and `column` are 1-based."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


def _mib(n: int) -> str:
    return f"{n / (1 << 20):g} MiB" if n >= 1 << 20 else f"{n:,} bytes"


def _too_big(head: bytes, limits: Limits) -> YamlLimitError:
    """Refuse at the first character past the limit, so the position says where to split."""
    last = head[head.rfind(b"\n") + 1 :].decode("utf-8", "ignore")
    line, column = head.count(b"\n") + 1, len(last) + 1
    return YamlLimitError(
        f"the file is larger than {_mib(limits.max_bytes)}, the most {limits.what} may be; "
        "split it into several files",
        line,
        column,
    )


def read_text(path: Path, limits: Limits) -> str:
    """The file's UTF-8 text, reading no more than the limit allows (OSError and
    UnicodeDecodeError as `Path.read_text` raises them)."""
    with path.open("rb") as f:
        data = f.read(limits.max_bytes + 1)
    if len(data) > limits.max_bytes:
        raise _too_big(data[: limits.max_bytes], limits)
    return data.decode("utf-8")


class _Parser(Protocol):
    """PyYAML's parser interface (pure Python or libyaml): events carry their marks."""

    def check_event(self, *choices: type[yaml.Event]) -> bool: ...

    def get_event(self) -> Any: ...


@dataclass(slots=True)
class _Open:
    """A collection being composed: its node, anchor, depth and what it adds up to so far."""

    node: yaml.MappingNode | yaml.SequenceNode
    anchor: str | None
    depth: int
    height: int = 1
    key: yaml.Node | None = None


@dataclass(slots=True)
class _Composer:
    limits: Limits
    resolver: Any = field(default_factory=Resolver)
    anchors: dict[str, yaml.Node] = field(default_factory=dict)
    # Values each anchored node stands for once expanded, and how many levels it nests.
    sizes: dict[int, tuple[int, int]] = field(default_factory=dict)
    total: int = 0

    def count(self, n: int, mark: Any, alias: str | None = None) -> None:
        self.total += n
        if self.total > self.limits.max_values:
            why = f"the alias *{alias} makes" if alias else "with its aliases expanded,"
            raise YamlLimitError(
                f"{why} the document more than {self.limits.max_values:,} values, the most "
                f"{self.limits.what} may hold; refused (aliases that repeat aliases multiply)",
                mark.line + 1,
                mark.column + 1,
            )

    def deep(self, depth: int, mark: Any, alias: str | None = None) -> YamlLimitError:
        via = f" through the alias *{alias}" if alias else ""
        return YamlLimitError(
            f"values nested more than {self.limits.max_depth} levels deep{via}, the most "
            f"{self.limits.what} may nest; refused",
            mark.line + 1,
            mark.column + 1,
        )

    def compose(self, parser: _Parser) -> yaml.Node | None:
        parser.get_event()  # stream start
        root = None
        if not parser.check_event(yaml.StreamEndEvent):
            parser.get_event()  # document start
            root = self.node(parser)
            parser.get_event()  # document end
        if not parser.check_event(yaml.StreamEndEvent):
            event = parser.get_event()
            raise ComposerError(
                "expected a single document in the stream",
                root.start_mark if root is not None else None,
                "but found another document",
                event.start_mark,
            )
        parser.get_event()
        return root

    def node(self, parser: _Parser) -> yaml.Node:
        """One document's root, composed with an explicit stack instead of recursion."""
        stack: list[_Open] = []
        while True:
            event: Any = parser.get_event()
            if isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
                stack.append(self.open(event, len(stack) + 1))
                continue
            if isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
                done, height = self.close(stack.pop(), event)
            elif isinstance(event, yaml.AliasEvent):
                done, height = self.alias(event, stack)
            else:
                done, height = self.scalar(event), 0
            if not stack:
                return done
            self.add(stack[-1], done, height)

    def scalar(self, event: Any) -> yaml.ScalarNode:
        self.anchor(event)
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.resolver.resolve(yaml.ScalarNode, event.value, event.implicit)
        node = yaml.ScalarNode(
            tag, event.value, event.start_mark, event.end_mark, style=event.style
        )
        self.count(1, event.start_mark)
        if event.anchor is not None:
            self.anchors[event.anchor] = node
            self.sizes[id(node)] = (1, 0)
        return node

    def open(self, event: Any, depth: int) -> _Open:
        self.anchor(event)
        if depth > self.limits.max_depth:
            raise self.deep(depth, event.start_mark)
        sequence = isinstance(event, yaml.SequenceStartEvent)
        kind = yaml.SequenceNode if sequence else yaml.MappingNode
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.resolver.resolve(kind, None, event.implicit)
        node = kind(tag, [], event.start_mark, None, flow_style=event.flow_style)
        self.count(1, event.start_mark)
        if event.anchor is not None:
            self.anchors[event.anchor] = node
            self.sizes[id(node)] = (self.total - 1, -1)  # the total before it, for close()
        return _Open(node, event.anchor, depth)

    def close(self, top: _Open, event: Any) -> tuple[yaml.Node, int]:
        top.node.end_mark = event.end_mark
        if top.anchor is not None:
            before = self.sizes[id(top.node)][0]
            self.sizes[id(top.node)] = (self.total - before, top.height)
        return top.node, top.height

    def anchor(self, event: Any) -> None:
        if event.anchor is not None and event.anchor in self.anchors:
            raise ComposerError(
                f"found duplicate anchor {event.anchor!r}; first occurrence",
                self.anchors[event.anchor].start_mark,
                "second occurrence",
                event.start_mark,
            )

    def alias(self, event: Any, stack: list[_Open]) -> tuple[yaml.Node, int]:
        name = event.anchor
        if name not in self.anchors:
            raise ComposerError(None, None, f"found undefined alias {name!r}", event.start_mark)
        target = self.anchors[name]
        if any(o.node is target for o in stack):
            mark = target.start_mark
            raise YamlLimitError(
                f"the alias *{name} refers to the value that contains it (&{name} at line "
                f"{mark.line + 1}), which would repeat for ever; refused",
                event.start_mark.line + 1,
                event.start_mark.column + 1,
            )
        size, height = self.sizes[id(target)]
        if len(stack) + height > self.limits.max_depth:
            raise self.deep(len(stack) + height, event.start_mark, name)
        self.count(size, event.start_mark, name)
        return target, height

    @staticmethod
    def add(top: _Open, node: yaml.Node, height: int) -> None:
        top.height = max(top.height, height + 1)
        if isinstance(top.node, yaml.SequenceNode):
            top.node.value.append(node)
        elif top.key is not None:
            top.node.value.append((top.key, node))
            top.key = None
        else:
            top.key = node


def compose(text: str, limits: Limits, *, fast: bool = False) -> yaml.Node | None:
    """The node graph `yaml.compose` gives for one document, or `YamlLimitError`; PyYAML's
    own errors (`yaml.YAMLError`, with marks) pass through unchanged. `fast` parses with
    libyaml when present (its marks and values are the same; its error wording is not)."""
    data = text.encode("utf-8")
    if len(data) > limits.max_bytes:
        raise _too_big(data[: limits.max_bytes], limits)
    loader_class = getattr(yaml, "CSafeLoader", yaml.SafeLoader) if fast else yaml.SafeLoader
    parser: Any = loader_class(text)
    try:
        return _Composer(limits).compose(parser)
    finally:
        parser.dispose()


def load(text: str, limits: Limits) -> Any:
    """What `yaml.safe_load` gives, within `limits` (None for an empty document)."""
    node = compose(text, limits)
    return None if node is None else SafeConstructor().construct_document(node)
