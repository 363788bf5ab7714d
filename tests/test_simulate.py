"""`bot simulate`: the seeds' scenarios run through the real bot and the simulator, with their
timelines pinned; scenario mistakes point at file:line; a refusal by Meta fails the run."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.cli import main
from bot.policy import format_duration
from bot.simulate import Report, ScenarioError, load_scenario, parse_scenario, run_scenario

SCENARIOS = Path(__file__).parent / "scenarios"
ROOT = SCENARIOS.parent.parent


async def simulate(path: Path, tmp_path: Path) -> Report:
    return await run_scenario(load_scenario(path), tmp_path)


def brief(report: Report, kinds: tuple[str, ...] = ("action", "sent", "dropped")) -> list[str]:
    """`offset kind user what`, one per timeline line: what happened, when, to whom, why."""
    start = report.scenario.start
    return [
        f"{format_duration(x.at - start)} {x.kind} {x.user} {x.what}"
        for x in report.lines
        if x.kind in kinds
    ]


def assert_clean(report: Report) -> None:
    """Meta refused nothing and every `expect:` in the file held."""
    assert report.of_kind("refused") == []
    assert [r.describe() for r in report.expectations if not r.held] == []
    assert report.expectations
    assert report.exit_status == 0


# --- the seeds' scenarios, one test each ---------------------------------------------------


async def test_pricing_reel_private_reply_window_until_the_next_day_and_no_36h_nudge(
    tmp_path: Path,
) -> None:
    report = await simulate(SCENARIOS / "pricing_reel.yaml", tmp_path)
    assert_clean(report)
    assert brief(report) == [
        "0s action alice comment",
        "0s sent alice private_reply",  # 11:00, the one reply the comment allows
        "20s sent alice public_comment",
        "15m action alice dm",  # 11:15: her answer opens the 24 h window
        "15m sent alice standard_window",  # the answer
        "15m sent alice standard_window",  # the opt-in request
        "1d14m action alice notify",
        "1d14m sent alice standard_window",  # 11:14 the next day: still open
        "1d16m action alice notify",
        "1d16m dropped alice window_closed",  # 11:16: closed
        "1d12h15m dropped alice window_closed",  # the 36 h nudge: no opt-in carries it
    ]
    nudge = report.of_kind("dropped")[-1]
    assert nudge.fields["source"] == "pricing/nudge"
    assert "window closed" in nudge.text


async def test_friday_question_answered_monday_by_a_human_under_human_agent_not_by_a_bot(
    tmp_path: Path,
) -> None:
    report = await simulate(SCENARIOS / "support_weekend.yaml", tmp_path)
    assert_clean(report)
    assert brief(report) == [
        "0s action carol dm",  # Friday 17:30
        "2d15h30m action carol agent_reply",  # Monday 09:00, written by automation
        "2d15h30m dropped carol human_agent_not_for_automation",
        "2d15h35m action carol agent_reply",  # Monday 09:05, written by a person
        "2d15h35m sent carol human_agent",
        "2d15h50m action carol dm",
        "2d15h55m action carol agent_reply",
        "2d15h55m sent carol standard_window",  # her answer reopened the 24 h window
        "2d16h30m action dave dm",
        "10d16h30m action dave agent_reply",
        "10d16h30m dropped dave human_agent_window_closed",  # 8 days: too late for anyone
    ]


async def test_back_in_stock_one_time_notification_goes_once_on_messenger(
    tmp_path: Path,
) -> None:
    report = await simulate(SCENARIOS / "back_in_stock.yaml", tmp_path)
    assert_clean(report)
    assert brief(report) == [
        "0s action dan dm",
        "0s action erin dm",
        "0s sent dan standard_window",  # sold out ...
        "0s sent dan standard_window",  # ... and the "Notify me" request
        "0s sent erin standard_window",
        "0s sent erin standard_window",
        "2m action dan optin",
        "9d action dan notify",
        "9d action erin notify",
        "9d dropped erin no_token",  # she never tapped "Notify me"
        "9d sent dan one_time_notification",
        "9d1h action dan notify",
        "9d1h dropped dan token_used",  # one message per token
    ]
    assert {x.account for x in report.lines} == {"messenger"}


async def test_weekly_flash_sale_one_per_week_nothing_after_stop_again_after_resume(
    tmp_path: Path,
) -> None:
    report = await simulate(SCENARIOS / "flash_sale.yaml", tmp_path)
    assert_clean(report)
    assert brief(report)[6:] == [
        "1m action fay optin",
        "4d action fay notify",
        "4d action gus notify",
        "4d dropped gus no_token",
        "4d sent fay marketing_message",
        "4d2h action fay notify",
        "4d2h dropped fay frequency_limit",  # WEEKLY: the second one this week waits
        "11d action fay notify",
        "11d sent fay marketing_message",
        "12d action fay stop",
        "18d action fay notify",
        "18d dropped fay opted_out",
        "20d action fay resume",
        "25d action fay notify",
        "25d sent fay marketing_message",
    ]


async def test_a_story_mention_and_a_story_reply_each_open_the_24h_window(
    tmp_path: Path,
) -> None:
    report = await simulate(SCENARIOS / "story_windows.yaml", tmp_path)
    assert_clean(report)
    assert brief(report) == [
        "0s action hana story_mention",
        "0s sent hana standard_window",
        "10m action ivan story_reply",
        "10m sent ivan standard_window",
        "20h action hana notify",
        "20h action ivan notify",
        "20h sent hana standard_window",
        "20h sent ivan standard_window",
        "1d1h action hana notify",
        "1d1h action ivan notify",
        "1d1h dropped hana window_closed",
        "1d1h dropped ivan window_closed",
    ]


def _max_in_an_hour(times: list[Any]) -> int:
    """The most sends in any rolling hour (what Meta's caps count)."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= timedelta(hours=1):
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def test_a_viral_post_is_paced_under_both_hourly_caps_and_nothing_is_refused(
    tmp_path: Path,
) -> None:
    report = await simulate(SCENARIOS / "viral_post.yaml", tmp_path)
    assert_clean(report)
    sent = report.of_kind("sent")
    private = [x.at for x in sent if x.what == "private_reply"]
    dms = [x.at for x in sent if x.what == "standard_window"]
    assert (len(private), len(dms)) == (800, 300)
    assert _max_in_an_hour(private) == 750  # Meta's private-reply cap, used to the full
    assert _max_in_an_hour(dms) == 200  # the automated-DM pace
    start = report.scenario.start
    assert max(private) - start > timedelta(hours=1)  # the last 50 waited for a free slot
    assert max(dms) - start < timedelta(hours=24)  # every answer inside its window


def test_every_scenario_file_has_a_test() -> None:
    tested = {
        "pricing_reel",
        "support_weekend",
        "back_in_stock",
        "flash_sale",
        "story_windows",
        "viral_post",
        "daemon_agrees",  # tests/test_agree.py
    }
    assert {p.stem for p in SCENARIOS.glob("*.yaml")} == tested


@pytest.mark.parametrize(
    "name", ["pricing_reel", "support_weekend", "back_in_stock", "flash_sale", "story_windows"]
)
async def test_in_process_and_over_loopback_http_give_the_same_report(
    name: str, tmp_path: Path
) -> None:
    scenario = load_scenario(SCENARIOS / f"{name}.yaml")
    local = (await run_scenario(scenario, tmp_path / "local")).to_json()
    http = (await run_scenario(scenario, tmp_path / "http", http=True)).to_json()
    del local["summary"]["wall_seconds"], http["summary"]["wall_seconds"]
    assert local["timeline"] and local == http


# --- the referee and the exit status ---------------------------------------------------------


def test_a_profile_looser_than_meta_is_caught_by_the_simulator_and_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["simulate", str(SCENARIOS / "must_fail" / "loose_window.yaml")])
    out = capsys.readouterr().out
    assert code == 1
    assert "META REFUSED window_closed (#10/2018278)" in out
    assert "1 refused by Meta" in out


def test_json_output_has_the_timeline_and_the_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["simulate", "--json", str(SCENARIOS / "must_fail" / "loose_window.yaml")])
    data = json.loads(capsys.readouterr().out)
    assert code == data["exit_status"] == 1
    kinds = [(x["offset"], x["kind"], x["user"], x["what"]) for x in data["timeline"]]
    assert kinds == [
        ("0s", "action", "jack", "dm"),
        ("0s", "sent", "jack", "standard_window"),
        ("1d12h", "dropped", "jack", "window_closed"),  # the bot's log: Meta said error 10
        ("1d12h", "refused", "jack", "window_closed"),  # the simulator's log
    ]
    refused = data["timeline"][-1]
    assert (refused["code"], refused["subcode"]) == (10, 2018278)
    assert data["summary"]["refused_by_meta"] == 1


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(text, encoding="utf-8")
    return path


FLOWS = f"flows: {ROOT / 'flows'}\ntemplates: {ROOT / 'templates'}\n"


def test_an_expectation_that_does_not_hold_fails_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        FLOWS + "until: 1h\n"
        "timeline:\n"
        "  - at: 0s\n"
        "    comment: {user: alice, text: PRICING}\n"
        "expect:\n"
        "  - {at: 0s, to: alice, basis: private_reply}\n"
        "  - {to: alice, basis: standard_window}\n",
    )
    code = main(["simulate", "--summary", str(path)])
    out = capsys.readouterr().out
    assert code == 1
    failed = 'line 9: sent {"to": "alice", "basis": "standard_window"}: wanted at least 1, found 0'
    assert f"EXPECTATION FAILED {failed}" in out
    assert "expectations 1/2 held" in out


def test_the_same_scenario_prints_the_same_timeline_every_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        FLOWS + "until: 1h\n"
        "timeline:\n"
        "  - at: 0s\n"
        "    repeat: 12\n"
        "    every: 1m\n"
        "    comment: {user: 'fan{n}', text: PRICING}\n",
    )

    def timeline() -> str:
        assert main(["simulate", "--notes", str(path)]) == 0
        out = capsys.readouterr().out
        return re.sub(r" in [0-9.]+ s$", "", out.rstrip("\n"))  # the wall time may differ

    first = timeline()
    assert timeline() == first
    public = [
        line for line in first.splitlines() if "bot sent" in line and "public_comment" in line
    ]
    assert len(public) == 12
    assert len({line.split('"')[1] for line in public}) > 1  # still varied across comments


# --- scenario mistakes name file:line:column and the key ------------------------------------


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        (
            "timeline:\n  - at: 0s\n    comment: {usr: alice, text: PRICING}\n",
            ":3:15: error: timeline[0].comment.usr:",
            "unknown key for a comment action; did you mean user?",
        ),
        (
            "timelime: []\n",
            ":1:1: error: timelime:",
            "unknown key for a scenario; did you mean timeline?",
        ),
        (
            "timeline:\n  - at: 0s\n    dm: {user: a, text: hi}\n  - at: 1h\n    coment: {}\n",
            ":5:5: error: timeline[1].coment:",
            "unknown key for a timeline entry; did you mean comment?",
        ),
        (
            "timeline:\n  - dm: {user: a, text: hi}\n",
            ":2:5: error: timeline[0]:",
            "an entry needs `at:`",
        ),
        (
            "timeline:\n  - at: soon\n    dm: {user: a, text: hi}\n",
            ":2:9: error: timeline[0].at:",
            "expected a duration like 0s, 15m, 3d 2h",
        ),
        (
            "timeline:\n  - at: 0s\n    dm: {user: a}\n",
            ":3:9: error: timeline[0].dm:",
            "dm needs text",
        ),
        (
            "timeline: []\nexpect:\n  - {to: a, basiss: private_reply}\n",
            ":3:13: error: expect[0].basiss:",
            "did you mean basis?",
        ),
        (
            "policy_profile:\n  instagram: {standard_windw: 48h}\ntimeline: []\n",
            ":2:15: error: policy_profile.instagram.standard_windw:",
            "did you mean standard_window?",
        ),
    ],
)
def test_a_scenario_mistake_names_file_line_and_key(
    tmp_path: Path, text: str, where: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    assert str(err.value).startswith(f"{path}{where}")
    assert message in str(err.value)


def test_the_cli_prints_the_scenario_error_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "timeline:\n  - at: 0s\n    comment: {usr: alice, text: PRICING}\n")
    assert main(["simulate", str(path)]) == 2
    assert f"bot: {path}:3:15: error: timeline[0].comment.usr:" in capsys.readouterr().err


def test_repeat_every_and_n_expand_one_entry_into_many() -> None:
    scenario = parse_scenario(
        "timeline:\n"
        "  - at: 1h\n"
        "    repeat: 3\n"
        "    every: 10m\n"
        "    comment: {user: 'fan{n}', text: 'PRICING #{n}', account: messenger}\n",
        Path("x.yaml"),
    )
    got = [
        (format_duration(a.at - scenario.start), a.user, a.args["text"], a.account.platform)
        for a in scenario.actions
    ]
    assert got == [
        ("1h", "fan1", "PRICING #1", "messenger"),
        ("1h10m", "fan2", "PRICING #2", "messenger"),
        ("1h20m", "fan3", "PRICING #3", "messenger"),
    ]
    assert scenario.end == scenario.start + timedelta(hours=1, minutes=20, days=7)
