"""The bounded YAML composer (bot/boundedyaml.py): on ordinary YAML it gives what PyYAML gave,
node for node and mark for mark; on hostile YAML (an alias inside itself, runaway nesting,
aliases of aliases, a huge file) every reader refuses it at once with the place and why:
flows, scenarios, bot.yaml and policy profiles alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from yaml.constructor import SafeConstructor

from bot.boundedyaml import FLOW_LIMITS, Limits, YamlLimitError, compose, load
from bot.config import load_config
from bot.errors import ConfigError
from bot.flows.yamlpos import Located, _walk, load_located
from bot.policy import ProfileError, load_profile
from bot.simulate.errors import ScenarioError
from bot.simulate.scenario import load_scenario
from tests.hostile_yaml import HOSTILE

ROOT = Path(__file__).resolve().parent.parent
SMALL = Limits("a test file", 1 << 20, 64, 10_000)


def same(a: yaml.Node, b: yaml.Node, seen: dict[int, int] | None = None) -> bool:
    """The same node graph: kinds, tags, values, styles, start and end marks, and sharing."""
    seen = {} if seen is None else seen
    if id(a) in seen:
        return seen[id(a)] == id(b)
    seen[id(a)] = id(b)
    marks = [(m.line, m.column) for m in (a.start_mark, a.end_mark, b.start_mark, b.end_mark)]
    if type(a) is not type(b) or a.tag != b.tag or marks[:2] != marks[2:]:
        return False
    if isinstance(a, yaml.ScalarNode):
        return bool(a.value == b.value and a.style == b.style)
    if a.flow_style != b.flow_style or len(a.value) != len(b.value):
        return False
    if isinstance(a, yaml.SequenceNode):
        return all(same(x, y, seen) for x, y in zip(a.value, b.value, strict=True))
    return all(
        same(k1, k2, seen) and same(v1, v2, seen)
        for (k1, v1), (k2, v2) in zip(a.value, b.value, strict=True)
    )


scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["yes", "no", "on", "007", "2026-03-02", "~", "- x", "a: b", "#c", ""])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=25,
)


@st.composite
def documents(draw: st.DrawFn) -> str:
    """Ordinary YAML in the styles people and dumpers write, with anchors and aliases for the
    values used twice."""
    parts = draw(st.lists(values, min_size=1, max_size=4))
    uses = draw(st.lists(st.integers(0, len(parts) - 1), max_size=4))
    data: Any = {"defs": parts, "uses": [parts[i] for i in uses]}
    text: str = yaml.safe_dump(
        data,
        default_flow_style=draw(st.sampled_from([False, True, None])),
        default_style=draw(st.sampled_from([None, None, '"', "'"])),
        indent=draw(st.integers(2, 6)),
        width=draw(st.sampled_from([20, 80, 1000])),
        allow_unicode=draw(st.booleans()),
        explicit_start=draw(st.booleans()),
        sort_keys=draw(st.booleans()),
    )
    return text


def _old_located(text: str) -> Located:
    """What load_located gave before: PyYAML's composer, then the same walk."""
    out = Located(None)
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if node is not None:
        out.data = _walk(SafeConstructor(), node, (), out)
    return out


@given(documents())
def test_ordinary_yaml_composes_to_the_same_nodes_data_and_positions(text: str) -> None:
    node = compose(text, FLOW_LIMITS)
    assert node is not None and same(node, yaml.compose(text, Loader=yaml.SafeLoader))
    fast = compose(text, FLOW_LIMITS, fast=True)
    assert fast is not None and same(fast, yaml.compose(text, Loader=yaml.CSafeLoader))
    assert load(text, FLOW_LIMITS) == yaml.safe_load(text)
    new, old = load_located(text), _old_located(text)
    assert (new.data, new.values, new.keys, new.raw) == (old.data, old.values, old.keys, old.raw)


def test_the_files_people_write_compose_as_before() -> None:
    files = [*ROOT.glob("flows/*.yaml"), ROOT / "bot" / "policy" / "default_profile.yaml"]
    files += [*ROOT.glob("tests/scenarios/**/*.yaml")]
    assert len(files) > 8
    for path in files:
        text = path.read_text(encoding="utf-8")
        fast = compose(text, FLOW_LIMITS, fast=True)
        assert fast is not None and same(fast, yaml.compose(text, Loader=yaml.CSafeLoader)), path


def test_merge_keys_and_shared_values_still_load() -> None:
    text = "base: &b {a: 1, b: [x, y]}\none: {<<: *b, c: 2}\ntwo: *b\nthree: &s hi\nfour: *s\n"
    assert load(text, SMALL) == yaml.safe_load(text)
    assert load_located(text).data["one"] == {"a": 1, "b": ["x", "y"], "c": 2}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_yaml_is_refused_where_the_limit_is_crossed(name: str) -> None:
    text, line, column, words = HOSTILE[name]
    with pytest.raises(YamlLimitError) as err:
        compose(text, FLOW_LIMITS)
    assert (err.value.line, err.value.column) == (line, column)
    assert err.value.message.startswith(words), err.value.message


def test_every_value_counts_with_its_aliases_expanded() -> None:
    # 1 root + 1 key + 50 (the anchored list) + 1 key + 1 list = 54, then 50 per alias.
    anchored = "a: &a [" + ", ".join(["x"] * 49) + "]\n"
    fits = anchored + "b: [" + ", ".join(["*a"] * 198) + "]\n"  # 9,954 values
    assert len(load(fits, SMALL)["b"]) == 198
    over = anchored + "b: [" + ", ".join(["*a"] * 199) + "]\n"  # 10,004
    with pytest.raises(YamlLimitError, match="the alias \\*a makes the document more than 10,000"):
        load(over, SMALL)


def test_a_file_over_the_size_limit_is_refused_at_the_first_character_past_it() -> None:
    text = "a: 1\n" + "é" * (1 << 20)
    with pytest.raises(YamlLimitError, match="larger than 1 MiB, the most a test file") as err:
        compose(text, SMALL)
    assert (err.value.line, err.value.column) == (2, ((1 << 20) - 5) // 2 + 1)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_settings_file_stops_start_up_with_its_place(tmp_path: Path, name: str) -> None:
    path = tmp_path / "bot.yaml"
    path.write_text(HOSTILE[name].text)
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    text, line, column, words = HOSTILE[name]
    assert str(err.value).startswith(f"{path}:{line}:{column}: {words}")


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_policy_profile_is_refused_with_its_place(tmp_path: Path, name: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(HOSTILE[name].text)
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    text, line, column, words = HOSTILE[name]
    assert str(err.value).startswith(f"{path}:{line}:{column}: {words}")


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_scenario_is_refused_with_its_place(tmp_path: Path, name: str) -> None:
    path = tmp_path / "month.yaml"
    path.write_text(HOSTILE[name].text)
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    text = str(err.value)
    assert text.startswith(f"{path}:") and ": error: " in text, text


def test_a_huge_settings_file_is_not_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "bot.yaml"
    path.write_bytes(b"accounts: []\n" + b"#" * (8 << 20))
    with pytest.raises(ConfigError, match=r"bot.yaml:2:2097140: the file is larger than 2 MiB"):
        load_config(path, env={})
