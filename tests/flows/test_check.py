"""`bot check` on a folder of broken flows and templates: every problem at once, each with
file, line, column, field path and message (issue 3, item 6), and the examples stay clean."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import pytest

from bot.cli import main
from bot.flows import SCHEMA_FILE, Severity, check_all, check_command, format_problem
from bot.flows.validate import accepted_keys
from bot.policy import default_profile
from tests.hostile_yaml import HOSTILE

from .conftest import Checker, write_tree

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def _no_one_time_on_instagram():  # type: ignore[no-untyped-def]
    p = default_profile()
    return p.with_platform(replace(p.instagram, one_time_notifications=False))


def test_broken_folder_reports_every_problem_with_its_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(HERE / "broken")
    out = io.StringIO()
    status = check_command("flows", "templates", _no_one_time_on_instagram(), out)
    expected = (HERE / "broken" / "expected.txt").read_text(encoding="utf-8")
    assert out.getvalue().splitlines() == expected.splitlines()
    assert status == 1


def test_broken_folder_problems_are_structured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(HERE / "broken")
    report = check_all("flows", "templates", _no_one_time_on_instagram())
    assert report.flowset is None
    typo = next(p for p in report.problems if "keywrods" in p.path)
    assert (typo.file, typo.line, typo.column) == ("flows/b_shape.yaml", 8, 7)
    assert typo.path == "flows[0].trigger.keywrods"
    assert typo.message.endswith("did you mean keywords?")
    assert typo.severity is Severity.ERROR
    undefined = next(p for p in report.problems if p.file == "templates/typo.j2")
    assert (undefined.line, undefined.column) == (2, 6)
    assert "contact.nmae" in undefined.message
    assert {p.severity for p in report.problems} == {Severity.ERROR, Severity.WARNING}


def test_the_examples_a_creator_copies_are_clean() -> None:
    report = check_all(ROOT / "flows", ROOT / "templates", default_profile())
    assert [format_problem(p) for p in report.problems] == []
    assert report.flowset is not None
    ids = {f.id for f in report.flowset.flows}
    assert {"pricing", "dm_menu", "story_mention_thanks", "human_handoff"} <= ids
    assert any(i.startswith("lead_") for i in ids)


def test_every_example_starts_with_the_schema_line() -> None:
    for path in sorted((ROOT / "flows").glob("*.yaml")):
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first == "# yaml-language-server: $schema=../bot/flows/flow.schema.json", path


def test_schema_and_validator_accept_the_same_keys() -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    defs = schema["definitions"]
    accepted = accepted_keys()
    for name, keys in accepted.items():
        assert set(defs[name]["properties"]) == set(keys), name
    objects = {n for n, d in defs.items() if d.get("additionalProperties") is False}
    assert objects == set(accepted)
    step_types = set(defs["step"]["properties"]["type"]["enum"])
    assert {n.removeprefix("step_") for n in accepted if n.startswith("step_")} == step_types


def test_check_command_exits_zero_with_warnings_only(check: Checker) -> None:
    report = check(
        {
            "w.yaml": """
            flows:
              - id: w
                trigger: {type: dm, keywords: [hi]}
                steps:
                  - {id: a, type: end}
                  - {id: never, type: end}
            """
        }
    )
    assert [p.severity for p in report.problems] == [Severity.WARNING]
    out = io.StringIO()
    assert check_command("flows", "templates", None, out) == 0
    assert out.getvalue().splitlines() == [
        "flows/w.yaml:6:14: warning: flows[0].steps[1].id: step 'never' can never run: "
        "no step leads to it",
        "0 errors, 1 warning in 1 flow file and 0 templates; 1 flow ready",
    ]


def test_missing_folders_are_errors_without_a_traceback(tmp_path: Path) -> None:
    report = check_all(tmp_path / "nope", tmp_path / "none")
    assert [p.message.split(" (")[0] for p in report.problems] == ["no such folder"] * 2
    assert report.flowset is None


def test_empty_file_is_a_warning(check: Checker) -> None:
    report = check({"empty.yaml": "# nothing yet\n"})
    assert [format_problem(p) for p in report.problems] == [
        "flows/empty.yaml:1:1: warning: the file is empty; write flows: and a list of flows"
    ]
    assert report.flowset is not None


def test_all_problems_of_a_file_at_once_not_only_the_first(check: Checker) -> None:
    report = check(
        {
            "many.yaml": """
            flows:
              - id: many
                priority: x
                enabled: maybe
                trigger: {type: dm, keywords: [a], matsh: word}
                steps:
                  - {id: a, type: send, template: t.j2, contnet: support}
                  - {id: b, type: wait_reply, timeout: forever}
            """
        },
        {"t.j2": "hi"},
    )
    assert [(p.line, p.path) for p in report.problems] == [
        (3, "flows[0].priority"),
        (4, "flows[0].enabled"),
        (5, "flows[0].trigger.matsh"),
        (7, "flows[0].steps[0].contnet"),
        (8, "flows[0].steps[1].timeout"),
    ]
    assert report.problems[2].message.endswith("did you mean match?")
    assert report.problems[3].message.endswith("did you mean content?")


def test_yes_and_no_keywords_are_words_not_booleans(check: Checker) -> None:
    report = check(
        {
            "yn.yaml": """
            flows:
              - id: yn
                trigger: {type: dm, keywords: [yes, no, 2025]}
                steps: [{id: a, type: end}]
            """
        }
    )
    assert report.flowset is not None
    assert report.flowset.flows[0].trigger.keywords == ("yes", "no", "2025")


def test_a_follow_up_inside_the_window_needs_no_topic(check: Checker) -> None:
    flows = """
    flows:
      - id: f
        trigger: {type: dm, keywords: [hi]}
        steps:
          - {id: later, type: follow_up, delay: 23h, template: t.j2}
          - {id: much_later, type: follow_up, delay: 24h, template: t.j2}
    """
    report = check({"f.yaml": flows}, {"t.j2": "hi"})
    assert [p.path for p in report.errors] == [
        "flows[0].steps[1].delay",
        "flows[0].steps[1].delay",
    ]
    assert "no basis on instagram" in report.errors[0].message
    assert "no basis on messenger" in report.errors[1].message


def test_a_follow_up_with_a_topic_someone_asks_for_is_clean(check: Checker) -> None:
    flows = """
    flows:
      - id: f
        platforms: [messenger]
        trigger: {type: dm, keywords: [hi]}
        steps:
          - {id: ask, type: request_optin, kind: one_time, topic: restock, title: Back in stock}
          - {id: later, type: follow_up, delay: 10d, topic: restock, template: t.j2}
    """
    report = check({"f.yaml": flows}, {"t.j2": "Back in stock: {{ topic }}"})
    assert report.problems == ()


def test_marketing_optin_on_messenger_is_refused_by_the_default_profile(check: Checker) -> None:
    flows = """
    flows:
      - id: f
        trigger: {type: dm, keywords: [hi]}
        steps:
          - id: ask
            type: request_optin
            kind: marketing
            topic: news
            title: News
            frequency: weekly
    """
    report = check({"f.yaml": flows})
    assert [p.message.split(",")[0] for p in report.errors] == [
        "marketing messages are turned off for messenger in the policy profile"
    ]


def test_text_over_the_messenger_limit_counts_characters(check: Checker) -> None:
    flows = """
    flows:
      - id: f
        platforms: [messenger]
        trigger: {type: dm, keywords: [hi]}
        steps: [{id: a, type: send, template: t.j2}]
    """
    fits = check({"f.yaml": flows}, {"t.j2": "é" * 2000})
    assert fits.problems == ()
    over = check({"f.yaml": flows}, {"t.j2": "é" * 2001})
    assert "renders to 2001 characters; messenger allows 2000" in over.errors[0].message


def test_instagram_counts_bytes(check: Checker) -> None:
    flows = """
    flows:
      - id: f
        platforms: [instagram]
        trigger: {type: dm, keywords: [hi]}
        steps: [{id: a, type: send, template: t.j2}]
    """
    report = check({"f.yaml": flows}, {"t.j2": "é" * 501})
    assert "renders to 1002 UTF-8 bytes; instagram allows 1000" in report.errors[0].message


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_yaml_is_one_error_with_its_place_from_bot_check(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "flows").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "flows" / "hostile.yaml").write_text(HOSTILE[name].text, encoding="utf-8")
    status = main(["check"])
    lines = capsys.readouterr().out.splitlines()
    text, line, column, words = HOSTILE[name]
    assert status == 1
    assert len(lines) == 2 and lines[0].startswith(f"flows/hostile.yaml:{line}:{column}: error: ")
    assert words in lines[0]
    assert lines[1] == "1 error, 0 warnings in 1 flow file and 0 templates"


LINKED_FLOW = """
flows:
  - id: linked
    trigger: {type: dm, keywords: [hi]}
    steps:
      - {id: a, type: send, template: p/t.j2}
      - {id: b, type: send, template: alias.j2}
"""


def _linked_tree(tmp_path: Path) -> Path:
    """A flows and templates folder, a secret beside them, and an in-folder link."""
    write_tree(tmp_path / "bot" / "flows", {"linked.yaml": LINKED_FLOW})
    write_tree(tmp_path / "bot" / "templates", {"real.j2": "hello", "p/keep.j2": "kept"})
    (tmp_path / "bot" / "templates" / "alias.j2").symlink_to("real.j2")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "token").write_text("EAAG-secret-token-123")
    return tmp_path / "bot"


def test_a_template_linked_outside_the_folder_is_refused_naming_where_it_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _linked_tree(tmp_path)
    (root / "templates" / "p" / "t.j2").symlink_to(tmp_path / "secret" / "token")
    monkeypatch.chdir(root)
    assert main(["check"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"templates/p/t.j2: error: p/t.j2: cannot read: a link to {tmp_path}/secret/token, "
        f"outside the templates folder {root}/templates; refused: copy it in, or link only "
        "to a place inside the folder",
        "1 error, 0 warnings in 1 flow file and 4 templates",
    ]


def test_a_folder_linked_outside_is_refused_and_nothing_in_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _linked_tree(tmp_path)
    (root / "templates" / "p" / "t.j2").write_text("fine")
    (root / "templates" / "out").symlink_to(tmp_path / "secret", target_is_directory=True)
    (root / "flows" / "more").symlink_to(tmp_path / "secret", target_is_directory=True)
    monkeypatch.chdir(root)
    assert main(["check"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"flows/more: error: a folder linked to {tmp_path}/secret, outside the flows folder "
        f"{root}/flows; refused: copy it in, or link only to a place inside the folder",
        f"templates/out: error: out: cannot read: a folder linked to {tmp_path}/secret, "
        f"outside the templates folder {root}/templates; refused: copy it in, or link only "
        "to a place inside the folder",
        "2 errors, 0 warnings in 2 flow files and 5 templates",
    ]
    report = check_all("flows", "templates")
    assert report.flowset is None
    assert not any("out/" in p.file for p in report.problems)


def test_links_that_stay_inside_the_folder_are_followed(tmp_path: Path) -> None:
    root = _linked_tree(tmp_path)
    (root / "templates" / "p" / "t.j2").write_text("fine")
    (root / "templates" / "q").symlink_to("p", target_is_directory=True)
    (root / "templates" / "loop").symlink_to(".", target_is_directory=True)
    report = check_all(root / "flows", root / "templates")
    assert report.problems == () and report.flowset is not None
    assert report.flowset.templates.names == {
        "alias.j2",
        "real.j2",
        "p/keep.j2",
        "p/t.j2",
        "q/keep.j2",
        "q/t.j2",
    }
    assert report.flowset.templates.source("alias.j2") == "hello"


def test_the_folders_themselves_may_be_links(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "flows").symlink_to(ROOT / "flows", target_is_directory=True)
    (tmp_path / "run" / "templates").symlink_to(ROOT / "templates", target_is_directory=True)
    report = check_all(tmp_path / "run" / "flows", tmp_path / "run" / "templates")
    assert report.problems == () and report.flowset is not None
