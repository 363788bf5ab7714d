"""The `bot simulate` command: its arguments, and the run from a scenario file to the printed
report and the exit status."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

from bot.policy import parse_duration
from bot.simulate.errors import ScenarioError
from bot.simulate.report import Report, format_report
from bot.simulate.runner import run_scenario
from bot.simulate.scenario import load_scenario

__all__ = ["add_simulate_parser", "simulate_command"]


def add_simulate_parser(sub: Any) -> None:
    sm = sub.add_parser(
        "simulate",
        help="run the flows against a scripted timeline on a virtual clock",
        description="Play a scenario (docs/simulate.md) against the real bot and the Graph API "
        "simulator; exit 1 if Meta's rules refused a send or an expectation failed.",
    )
    sm.add_argument("scenario", type=Path, help="the scenario YAML file")
    sm.add_argument("--json", action="store_true", help="machine-readable output")
    sm.add_argument("--notes", action="store_true", help="also show the flows' notes")
    sm.add_argument("--summary", action="store_true", help="only the summary and failures")
    sm.add_argument("--data", type=Path, help="keep the SQLite file in this folder")
    sm.add_argument(
        "--http",
        action="store_true",
        help="bot and simulator talk over loopback HTTP, as a daemon and Meta do, not in "
        "process (slower; the same report)",
    )
    sm.add_argument(
        "--resolution",
        help="run the bot at most once per this much virtual time, e.g. 1m (default: the "
        "scenario's, else exact)",
    )


def simulate_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """`bot simulate`: 0 when Meta refused nothing and every expectation held, else 1."""
    out = out or sys.stdout
    scenario = load_scenario(args.scenario)
    resolution = None
    if args.resolution is not None:
        try:
            resolution = parse_duration(args.resolution)
        except ValueError:
            raise ScenarioError(f"--resolution: not a duration: {args.resolution!r}") from None
    keep: Path | None = args.data
    data_dir = keep or Path(tempfile.mkdtemp(prefix="bot-simulate-"))
    try:
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for suffix in ("", "-wal", "-shm"):  # a fresh run, not the last one's state
                (keep / f"simulate.sqlite3{suffix}").unlink(missing_ok=True)
        reports: list[Report] = []

        async def play() -> None:
            # The report is not the main task's result: on the way out, asyncio.run (3.11)
            # reprs that task whole, result included (2 s for a month of 10,000 contacts).
            reports.append(
                await run_scenario(
                    scenario, data_dir, notes=args.notes, resolution=resolution, http=args.http
                )
            )

        asyncio.run(play())
        report = reports[0]
    finally:
        if keep is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    if args.json:
        json.dump(report.to_json(), out, ensure_ascii=False, indent=1)
        out.write("\n")
    else:
        out.write(format_report(report, summary_only=args.summary))
    return report.exit_status
