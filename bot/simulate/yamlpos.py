"""The scenario's YAML with the line and column of every key and value, so each mistake is
reported as `file:line:column: error: key: message`.

A plain scalar that YAML 1.1 reads as a bool or a number (`yes`, `007`) keeps its source text,
so `text: yes` is the word the author wrote.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bot.boundedyaml import SCENARIO_LIMITS, YamlLimitError, read_text
from bot.boundedyaml import compose as bounded_compose
from bot.simulate.errors import ScenarioError

__all__ = ["Doc", "YamlPath", "compose", "format_path", "read_scenario"]

YamlPath = tuple[str | int, ...]


@dataclass(slots=True)
class Doc:
    """Parsed YAML plus where each key and value was written, for file:line errors."""

    source: str
    keys: dict[YamlPath, tuple[int, int]] = field(default_factory=dict)
    values: dict[YamlPath, tuple[int, int]] = field(default_factory=dict)
    raw: dict[YamlPath, str] = field(default_factory=dict)

    def line(self, path: YamlPath) -> int:
        return self._pos(path)[0]

    def _pos(self, path: YamlPath, at_key: bool = False) -> tuple[int, int]:
        if at_key and path in self.keys:
            return self.keys[path]
        for n in range(len(path), -1, -1):
            if path[:n] in self.values:
                return self.values[path[:n]]
        return (1, 1)

    def error(self, path: YamlPath, message: str, *, at_key: bool = False) -> ScenarioError:
        line, column = self._pos(path, at_key)
        where = format_path(path)
        field_ = f" {where}:" if where else ""
        return ScenarioError(f"{self.source}:{line}:{column}: error:{field_} {message}")

    def unknown(self, path: YamlPath, key: str, known: Iterable[str], what: str) -> ScenarioError:
        close = difflib.get_close_matches(key, list(known), n=1)
        hint = f"; did you mean {close[0]}?" if close else f" (known: {', '.join(known)})"
        return self.error((*path, key), f"unknown key for {what}{hint}", at_key=True)

    def text(self, path: YamlPath, value: Any) -> str:
        """A scalar as the author wrote it: `text: yes` is the word, not YAML 1.1's true."""
        if isinstance(value, dict | list) or value is None:
            raise self.error(path, "expected a text value")
        return self.raw.get(path, str(value))


def format_path(path: YamlPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def read_scenario(path: Path) -> str:
    """The scenario file's text, read no further than the size limit allows."""
    try:
        return read_text(path, SCENARIO_LIMITS)
    except YamlLimitError as exc:
        raise ScenarioError(f"{path}:{exc.line}:{exc.column}: error: {exc.message}") from None
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read the scenario: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{path}: cannot read the scenario: not UTF-8 text ({exc})") from None


def compose(text: str, source: str) -> tuple[Any, Doc]:
    """Parse with line marks on every node (libyaml when present: bench files are large),
    within the scenario limits of bot/boundedyaml.py."""
    doc = Doc(source)
    try:
        node = bounded_compose(text, SCENARIO_LIMITS, fast=True)
    except YamlLimitError as exc:
        raise ScenarioError(f"{source}:{exc.line}:{exc.column}: error: {exc.message}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "not valid YAML"
        raise ScenarioError(f"{source}:{line}:{column}: error: invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{source}:1:1: error: invalid YAML: {exc}") from None
    if node is None:
        return None, doc
    constructor = yaml.constructor.SafeConstructor()

    def walk(n: yaml.Node, path: YamlPath) -> Any:
        doc.values[path] = (n.start_mark.line + 1, n.start_mark.column + 1)
        if isinstance(n, yaml.MappingNode):
            constructor.flatten_mapping(n)
            out: dict[str, Any] = {}
            for key_node, value_node in n.value:
                key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
                child = (*path, key)
                doc.keys[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                if key in out:
                    raise doc.error(child, "this key is written twice", at_key=True)
                out[key] = walk(value_node, child)
            return out
        if isinstance(n, yaml.SequenceNode):
            return [walk(item, (*path, i)) for i, item in enumerate(n.value)]
        value = constructor.construct_object(n)
        if not isinstance(value, str) and isinstance(n, yaml.ScalarNode) and value is not None:
            doc.raw[path] = str(n.value)
        return value

    return walk(node, ()), doc
