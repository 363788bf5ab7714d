"""Untrusted input costs bounded time and memory (the issue of that name, items 6 and 7), from the
outside:
a hostile comment or a hostile template, posted as a signed webhook into the running bot, is
dealt with, and the next valid comment is still answered."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from tests.conftest import IG_ACCOUNT, Stack
from tests.test_flows_e2e import own_flows_stack

M = timedelta(minutes=1)

_REGEX_FLOWS = """\
flows:
  - id: hostile
    trigger: {type: comment, keywords: ['(a+)+$'], match: regex}
    steps:
      - {id: r, type: private_reply, template: hostile.j2}
  - id: pricing
    trigger: {type: comment, keywords: [pricing]}
    steps:
      - {id: r, type: private_reply, template: pricing.j2}
"""


def private_replies(s: Stack) -> list[Any]:
    return [e for e in s.sim.accepted() if e.basis == "private_reply"]


async def inbox_states(s: Stack) -> dict[str, int]:
    return dict(await s.rows("SELECT state, count(*) FROM inbox GROUP BY state"))


async def test_a_catastrophic_regex_comment_is_processed_and_the_next_one_answered(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path, clock: Any
) -> None:
    # With Python's `re`, 28 characters held the loop 8 s, doubling per character: this one
    # would hold it for centuries, and the test would never end.
    s = await own_flows_stack(
        aiohttp_client,
        aiohttp_server,
        tmp_path,
        clock,
        _REGEX_FLOWS,
        {"hostile.j2": "all a's", "pricing.j2": "Plans start at $9."},
    )
    try:
        hostile = await s.sim.player.comment(IG_ACCOUNT, "mallory", "reel1", "a" * 60 + "!")
        assert hostile.status == 200
        await s.process()
        assert await inbox_states(s) == {"done": 1}
        assert private_replies(s) == []  # `(a+)+$` doesn't match "aaa...!"
        await s.sim.player.comment(IG_ACCOUNT, "alice", "reel1", "PRICING?")
        await s.sim.player.comment(IG_ACCOUNT, "bob", "reel1", "aaaa")
        await s.run_until(s.clock.now() + M)
        got = {e.user_id: e.body["message"]["text"] for e in private_replies(s)}
        assert got == {s.user("alice"): "Plans start at $9.", s.user("bob"): "all a's"}
        assert s.sim.refused() == []
    finally:
        await s.sim.close()


_TEMPLATE_FLOWS = """\
flows:
  - id: hostile
    trigger: {type: comment, keywords: [hostile]}
    steps:
      - {id: r, type: private_reply, template: hostile.j2}
  - id: pricing
    trigger: {type: comment, keywords: [pricing]}
    steps:
      - {id: r, type: private_reply, template: pricing.j2}
"""
# With the old renderer, a 1,008-character comment made the first run for minutes (nested
# loops over its text, 10^9 turns: no ack for 20 s) and the second build a 1 GB string (every
# gap of the text replaced by a million characters). Both pass `bot check`, whose hostile
# sample comment is 1,000 characters long: only the budget at run time can stop them.
TWENTY_SECONDS = (
    "Thanks!{% if comment.text|length > 1000 %}{% for a in comment.text %}"
    "{% for b in comment.text %}{% for c in comment.text %}{% endfor %}{% endfor %}{% endfor %}"
    "{% endif %}"
)
ONE_GIGABYTE = (
    "Thanks!{% if comment.text|length > 1000 %}"
    "{{ comment.text|replace('', comment.text|center(1000000)) }}{% endif %}"
)


async def _hostile_template_is_dropped_and_the_next_comment_answered(
    s: Stack, reason: str
) -> None:
    long_comment = "hostile " + "x" * 1000  # 1,008 characters
    hostile = await s.sim.player.comment(IG_ACCOUNT, "mallory", "reel1", long_comment)
    assert hostile.status == 200
    await s.process()
    assert await inbox_states(s) == {"done": 1}
    assert private_replies(s) == []  # nothing sent, not even part of it
    dropped = await s.rows("SELECT reason, detail FROM send_log WHERE outcome = 'dropped'")
    assert dropped == [("template_failed", f"hostile.j2: {reason}")]
    await s.sim.player.comment(IG_ACCOUNT, "alice", "reel1", "pricing?")
    await s.run_until(s.clock.now() + M)
    assert [e.user_id for e in private_replies(s)] == [s.user("alice")]
    assert s.sim.refused() == []


async def test_a_template_looping_over_a_long_comment_stops_at_its_step_budget(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path, clock: Any
) -> None:
    s = await own_flows_stack(
        aiohttp_client,
        aiohttp_server,
        tmp_path,
        clock,
        _TEMPLATE_FLOWS,
        {"hostile.j2": TWENTY_SECONDS, "pricing.j2": "Plans start at $9."},
    )
    try:
        await _hostile_template_is_dropped_and_the_next_comment_answered(
            s, "stopped after 10,000 loop steps"
        )
    finally:
        await s.sim.close()


async def test_a_template_building_a_gigabyte_stops_at_its_output_budget(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path, clock: Any
) -> None:
    s = await own_flows_stack(
        aiohttp_client,
        aiohttp_server,
        tmp_path,
        clock,
        _TEMPLATE_FLOWS,
        {"hostile.j2": ONE_GIGABYTE, "pricing.j2": "Plans start at $9."},
    )
    try:
        await _hostile_template_is_dropped_and_the_next_comment_answered(s, "output over 64 KB")
    finally:
        await s.sim.close()
