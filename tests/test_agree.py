"""`bot simulate` and the running daemon agree: one scenario played by each, what they sent
and dropped compared. The simulator is the creator's preview, so it must never show a message
the daemon would not send (issue 13, item 4: the hand-over message went in `bot simulate` and
never in the daemon, because its clock carries sub-second digits).

The daemon side is the app as `bot run` builds it, with its own workers and dispatcher, over
real HTTP to the Graph API simulator, on a virtual clock that starts at a real clock's
microseconds and is moved only when the daemon sleeps on it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from bot.clock import VirtualClock, to_resolution
from bot.simulate.runner import play_user_action, run_scenario
from bot.simulate.scenario import BUSINESS_ACTIONS, load_scenario
from tests.conftest import Stack, make_stack

SCENARIO = Path(__file__).parent / "scenarios" / "daemon_agrees.yaml"
Outcomes = Counter[tuple[str, ...]]


def what_simulate_did(report: Any) -> Outcomes:
    out: Outcomes = Counter()
    for line in report.lines:
        if line.kind == "sent":
            out[("sent", line.user, line.fields["basis"], line.fields["message_text"])] += 1
        elif line.kind == "dropped":
            out[("dropped", line.user, line.fields["reason"] or "")] += 1
    return out


async def what_the_daemon_did(stack: Stack, names: dict[str, str]) -> Outcomes:
    rows = await stack.rows(
        "SELECT l.outcome, l.user_id, l.basis, l.reason, o.body FROM send_log l"
        " LEFT JOIN outbox o ON o.id = l.outbox_id ORDER BY l.id"
    )
    import json

    out: Outcomes = Counter()
    for outcome, uid, basis, reason, body in rows:
        user = names.get(uid, uid)
        if outcome == "sent":
            message = json.loads(body) if body else {}
            text = message.get("text") or _attachment_text(message)
            out[("sent", user, basis, text)] += 1
        elif outcome in ("dropped", "expired"):
            out[("dropped", user, reason or "")] += 1
    return out


def _attachment_text(message: dict[str, Any]) -> str:
    payload = (message.get("attachment") or {}).get("payload") or {}
    return str(payload.get("text") or payload.get("title") or "")


async def _settle(stack: Stack) -> None:
    """Let the daemon's own workers run until nothing is left to do at this instant."""
    quiet = 0
    for _ in range(3000):
        await asyncio.sleep(0.002)
        await stack.sim.drain()
        now = stack.clock.now()
        (busy,) = (
            await stack.rows(
                "SELECT (SELECT count(*) FROM event_queue WHERE state = 'new')"
                " + (SELECT count(*) FROM outbox WHERE state IN ('pending', 'sending')"
                " AND due_at <= ?) + (SELECT count(*) FROM flow_runs WHERE due_at <= ?)",
                int(now.timestamp() * 1000),
                int(now.timestamp() * 1000),
            )
        )[0]
        (waiting,) = (await stack.rows("SELECT count(*) FROM inbox WHERE state = 'new'"))[0]
        quiet = quiet + 1 if busy == 0 and waiting == 0 else 0
        if quiet >= 5:
            return
    raise AssertionError("the daemon did not settle")


async def _run_to(stack: Stack, target: Any) -> None:
    """Move the virtual clock to `target`, stopping wherever the daemon sleeps on it."""
    await _settle(stack)
    target = to_resolution(target)  # what the clock reads: whole milliseconds
    while stack.clock.now() < target:
        wake = stack.clock.next_wake()
        step = target if wake is None or wake > target else wake
        if step > stack.clock.now():
            stack.clock.set(step)
        await _settle(stack)


async def test_bot_simulate_and_the_running_daemon_send_and_drop_the_same(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    scenario = load_scenario(SCENARIO)
    report = await run_scenario(scenario, tmp_path / "simulate")
    assert report.refused == 0
    simulated = what_simulate_did(report)
    assert any(k[0] == "sent" and k[1] == "bob" for k in simulated)  # the hand-over message

    # The daemon: a real clock's microseconds; every action lands that much after its time.
    offset = timedelta(microseconds=618_734)
    clock = VirtualClock(scenario.start + offset)
    stack = await make_stack(
        aiohttp_client,
        aiohttp_server,
        tmp_path / "daemon",
        clock,
        start_workers=True,
        flows_dir=str(scenario.flows_dir),
        templates_dir=str(scenario.templates_dir),
    )
    try:
        names: dict[str, str] = {}
        for action in scenario.actions:
            assert action.name not in BUSINESS_ACTIONS, "user actions only here"
            await _run_to(stack, action.at + offset)
            if action.user is not None:
                names[stack.sim.user_id(action.user)] = action.user
            await play_user_action(stack.sim, action)
        await _run_to(stack, scenario.end + offset)
        daemon = await what_the_daemon_did(stack, names)
        assert stack.sim.refused() == []
        assert stack.rt.dead == []
    finally:
        await stack.sim.close()
    assert daemon == simulated
