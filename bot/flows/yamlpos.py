"""YAML with a line and column for every key and value, so each problem can point at its text.

`yaml.compose` keeps a start mark on every node; this turns the node tree into plain Python
values and a table from each value's path to where it starts. A plain scalar that YAML 1.1
reads as a bool or a number (`yes`, `no`, `on`, `007`) keeps its source text too, because a
keyword list such as `[yes, no]` means words, not booleans. The nodes come from the bounded
composer (bot/boundedyaml.py): no recursive alias, no runaway nesting or expansion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from bot.boundedyaml import FLOW_LIMITS, Limits, YamlLimitError, compose
from bot.flows.model import YamlPath

__all__ = ["Located", "Pos", "YamlSyntaxError", "format_path", "load_located"]


@dataclass(frozen=True, slots=True, order=True)
class Pos:
    """1-based line and column."""

    line: int
    column: int


class YamlSyntaxError(Exception):
    """The text is not YAML, or past a limit (bot/boundedyaml.py); `pos` is where the parser
    gave up or the limit was crossed."""

    def __init__(self, message: str, pos: Pos) -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos


@dataclass(slots=True)
class Located:
    """Parsed data plus where each part of it was written."""

    data: Any
    values: dict[YamlPath, Pos] = field(default_factory=dict)
    keys: dict[YamlPath, Pos] = field(default_factory=dict)
    raw: dict[YamlPath, str] = field(default_factory=dict)
    duplicates: list[tuple[YamlPath, Pos]] = field(default_factory=list)

    def pos(self, path: YamlPath) -> Pos:
        """Where `path` is written; for a missing key, where its nearest parent starts."""
        for n in range(len(path), -1, -1):
            found = self.values.get(path[:n])
            if found is not None:
                return found
        return Pos(1, 1)

    def key_pos(self, path: YamlPath) -> Pos:
        return self.keys.get(path) or self.pos(path)


def _pos(mark: yaml.Mark | None) -> Pos:
    return Pos(1, 1) if mark is None else Pos(mark.line + 1, mark.column + 1)


def format_path(path: YamlPath) -> str:
    """`flows[0].steps[2].template`: the field path shown in every problem."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def load_located(text: str, limits: Limits = FLOW_LIMITS) -> Located:
    """Parse one YAML document; raise `YamlSyntaxError` with a position if it isn't YAML or
    crosses one of `limits`."""
    try:
        node = compose(text, limits)
        located = Located(None)
        if node is not None:
            located.data = _walk(SafeConstructor(), node, (), located)
        return located
    except YamlLimitError as exc:
        raise YamlSyntaxError(exc.message, Pos(exc.line, exc.column)) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = exc.problem or exc.context or "not valid YAML"
        if exc.context and exc.problem:
            where = f" at line {exc.context_mark.line + 1}" if exc.context_mark else ""
            message = f"{exc.problem} ({exc.context}{where})"
        raise YamlSyntaxError(f"invalid YAML: {message}", _pos(mark)) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(f"invalid YAML: {exc}", Pos(1, 1)) from None


def _walk(loader: SafeConstructor, node: yaml.Node, path: YamlPath, out: Located) -> Any:
    out.values[path] = _pos(node.start_mark)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(loader, key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            child = (*path, key)
            if key in result:
                out.duplicates.append((child, _pos(key_node.start_mark)))
            out.keys[child] = _pos(key_node.start_mark)
            result[key] = _walk(loader, value_node, child, out)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_walk(loader, item, (*path, i), out) for i, item in enumerate(node.value)]
    value = _scalar(loader, node)
    if isinstance(value, bool | int | float) and getattr(node, "style", None) is None:
        out.raw[path] = str(node.value)
    return value


def _scalar(loader: SafeConstructor, node: yaml.Node) -> Any:
    return loader.construct_object(node, deep=True)
