"""`bot simulate SCENARIO.yaml`: the real daemon against a scripted timeline on a virtual clock.

The bot's own app (webhook -> inbox -> engine -> outbox -> sender) and the Graph API simulator
run on loopback, as in the tests' `make_stack`, on one `VirtualClock` that jumps from one due
time to the next, so thirty days pass in seconds. The simulator is the referee: it applies
Meta's rules on its own (POLICY.md), so a send it refuses is a policy bug and the exit status
says so. The scenario format is in docs/simulate.md.

    scenario.py   the scenario (accounts, timeline, expectations) and its YAML parser
    yamlpos.py    YAML with the line and column of every key, for file:line errors
    runner.py     plays the scenario against the bot's app and the simulator
    timeline.py   one line per thing that happened, from the actions, send log and simulator
    report.py     the expectations checked, the summary, the text and --json outputs
    command.py    the `bot simulate` arguments and exit status
"""

from __future__ import annotations

from bot.simulate.command import add_simulate_parser, simulate_command
from bot.simulate.errors import ScenarioError
from bot.simulate.report import Report, format_report
from bot.simulate.runner import run_scenario
from bot.simulate.scenario import (
    Action,
    Expectation,
    Scenario,
    ScenarioAccount,
    load_scenario,
    parse_scenario,
)
from bot.simulate.timeline import TimelineLine

__all__ = [
    "Action",
    "Expectation",
    "Report",
    "Scenario",
    "ScenarioAccount",
    "ScenarioError",
    "TimelineLine",
    "add_simulate_parser",
    "format_report",
    "load_scenario",
    "parse_scenario",
    "run_scenario",
    "simulate_command",
]
