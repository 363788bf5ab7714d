"""docs/flows.md documents the format the validator accepts: every YAML example in it is
read with no problem, and every trigger, step type and guard has an example."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from bot.flows import StepType, TriggerType, format_problem
from bot.flows.readers import Ctx
from bot.flows.schema import GUARD_FIELDS
from bot.flows.validate import read_file
from bot.flows.yamlpos import load_located

DOC = Path(__file__).parent.parent.parent / "docs" / "flows.md"
BLOCK = re.compile(r"```yaml\n(.*?)```", re.DOTALL)
ANCHOR = "flows:\n  - id: doc\n    trigger: {type: dm}\n    steps: [{id: end, type: end}]\n"


def _as_file(block: str) -> str:
    """Wrap a documented fragment (a trigger, guards or steps) into a whole flow file."""
    if block.startswith("trigger:"):
        body = textwrap.indent(block, "    ")
        return f"flows:\n  - id: doc\n{body}    steps: [{{id: end, type: end}}]\n"
    if block.startswith("guards:"):
        return ANCHOR + textwrap.indent(block, "    ")
    if block.startswith("- id:"):
        steps = textwrap.indent(block, "      ")
        return f"flows:\n  - id: doc\n    trigger: {{type: comment}}\n    steps:\n{steps}"
    return block


def test_every_yaml_example_in_the_docs_is_valid() -> None:
    blocks = BLOCK.findall(DOC.read_text(encoding="utf-8"))
    assert len(blocks) > 20
    for block in blocks:
        ctx = Ctx("docs/flows.md", load_located(_as_file(block)))
        flows = read_file(ctx)
        problems = [format_problem(p) for p in ctx.problems]
        if "keywrods" in block:  # the deliberately broken `bot check` example
            assert len(problems) == 1
            continue
        assert problems == [], block
        assert flows, block


def test_every_trigger_step_and_guard_has_an_example() -> None:
    text = DOC.read_text(encoding="utf-8")
    for trigger in TriggerType:
        assert f"type: {trigger}\n" in text, trigger
    for step in StepType:
        assert f"type: {step}\n" in text, step
    for guard in GUARD_FIELDS:
        assert f"  {guard}:" in text, guard
