"""The shipped example flows end to end: signed webhooks from the simulator's player into the
running bot, sends observed (and judged) at the simulator, time moved by a virtual clock."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IG_ACCOUNT, Stack, make_stack

ROOT = Path(__file__).resolve().parent.parent
M = timedelta(minutes=1)
H = timedelta(hours=1)
D = timedelta(days=1)


def dms(stack: Stack, user: str) -> list[Any]:
    """What Meta accepted into the user's DMs (public comment replies left out)."""
    return [e for e in stack.sim.accepted(user=stack.user(user)) if e.endpoint == "messages"]


async def test_a_pricing_comment_gets_one_private_reply_and_a_public_reply(bot: Stack) -> None:
    c = await bot.sim.player.comment(IG_ACCOUNT, "alice", "reel1", "PRICING!!")
    await bot.run_until(bot.clock.now() + M)
    accepted = bot.sim.accepted()
    kinds = [(e.endpoint, e.basis) for e in accepted]
    assert ("messages", "private_reply") in kinds
    assert [e.recipient for e in accepted if e.basis == "private_reply"] == [
        {"comment_id": c.comment_id}
    ]
    assert any(e.endpoint != "messages" for e in accepted)  # the public reply, after 20 s
    assert bot.sim.refused() == []


async def test_the_same_comment_redelivered_and_repeat_comments_never_give_a_second_dm(
    bot: Stack,
) -> None:
    first = await bot.sim.player.comment(IG_ACCOUNT, "alice", "reel1", "pricing")
    await bot.process()
    await bot.sim.player.redeliver(first)
    for _ in range(5):  # one user commenting PRICING again and again: the cooldown holds
        bot.clock.advance(M)
        await bot.sim.player.comment(IG_ACCOUNT, "alice", "reel1", "PRICING")
    await bot.run_until(bot.clock.now() + H)
    private = [e for e in bot.sim.accepted() if e.basis == "private_reply"]
    assert len(private) == 1
    assert bot.sim.refused() == []


async def test_accented_and_shouted_keywords_match_and_others_do_not(bot: Stack) -> None:
    await bot.sim.player.comment(IG_ACCOUNT, "bob", "reel1", "pricíng?")
    await bot.sim.player.comment(IG_ACCOUNT, "carol", "reel1", "love this reel")
    await bot.run_until(bot.clock.now() + M)
    users = {e.user_id for e in bot.sim.accepted() if e.basis == "private_reply"}
    assert users == {bot.user("bob")}


async def test_the_seed_example_answer_optin_and_nudge_on_the_token(bot: Stack) -> None:
    # 11:00 PRICING on a reel; the private reply; 11:15 the user answers in the DM thread.
    await bot.sim.player.comment(IG_ACCOUNT, "alice", "reel1", "PRICING")
    await bot.run_until(bot.clock.now() + 15 * M)
    await bot.sim.player.dm(IG_ACCOUNT, "alice", "is there a yearly plan?")
    await bot.run_until(bot.clock.now() + M)
    bases = [e.basis for e in dms(bot, "alice")]
    assert bases[0] == "private_reply"
    assert bases[1:] == ["standard_window", "standard_window"]  # the answer, the opt-in ask
    optin_request = dms(bot, "alice")[-1].body["message"]
    assert optin_request["attachment"]["payload"]["template_type"] == "notification_messages"
    await bot.sim.player.optin(
        IG_ACCOUNT, "alice", "notification_messages", "pricing_updates", "WEEKLY"
    )
    await bot.run_until(bot.clock.now() + 4 * D, step=6 * H)
    last = dms(bot, "alice")[-1]
    assert last.basis == "marketing"  # three days on, the window long closed
    assert last.recipient.get("notification_messages_token")
    assert bot.sim.refused() == []


async def test_without_the_optin_the_nudge_is_dropped_with_its_reason(bot: Stack) -> None:
    await bot.sim.player.comment(IG_ACCOUNT, "alice", "reel1", "PRICING")
    await bot.run_until(bot.clock.now() + 15 * M)
    await bot.sim.player.dm(IG_ACCOUNT, "alice", "is there a yearly plan?")
    await bot.run_until(bot.clock.now() + 4 * D, step=6 * H)
    assert len(dms(bot, "alice")) == 3  # no nudge
    assert bot.sim.refused() == []
    dropped = await bot.rows("SELECT outcome, reason FROM send_log WHERE outcome != 'sent'")
    assert dropped and dropped[-1][0] == "dropped"


async def test_a_dm_keyword_shows_the_menu_and_branches_on_the_tap(bot: Stack) -> None:
    await bot.sim.player.dm(IG_ACCOUNT, "dana", "menu please")
    await bot.run_until(bot.clock.now() + M)
    menu = dms(bot, "dana")[-1].body["message"]
    assert [q["payload"] for q in menu["quick_replies"]][0] == "MENU_PRICING"
    await bot.sim.player.quick_reply(IG_ACCOUNT, "dana", "MENU_HOURS", "Opening hours")
    await bot.run_until(bot.clock.now() + M)
    assert len(dms(bot, "dana")) == 2
    assert bot.sim.refused() == []


async def test_notes_explain_what_each_flow_decided(bot: Stack) -> None:
    await bot.sim.player.comment(IG_ACCOUNT, "alice", "reel1", "PRICING")
    await bot.run_until(bot.clock.now() + M)
    notes = [n for (n,) in await bot.rows("SELECT note FROM flow_notes ORDER BY id")]
    assert any("queued private_reply" in n for n in notes)


async def test_a_story_mention_is_thanked_once_a_week_and_tagged(bot: Stack) -> None:
    await bot.sim.player.story_mention(IG_ACCOUNT, "finn", "https://cdn.example/s1.jpg")
    await bot.run_until(bot.clock.now() + M)
    await bot.sim.player.story_mention(IG_ACCOUNT, "finn", "https://cdn.example/s2.jpg")
    await bot.run_until(bot.clock.now() + M)
    assert [e.basis for e in dms(bot, "finn")] == ["standard_window"]  # the mention opened it
    tags = await bot.rows("SELECT tags FROM contacts WHERE user_id = ?", bot.user("finn"))
    assert "story_mentioner" in tags[0][0]


async def test_a_guide_comment_collects_a_valid_email_and_sends_the_guide(bot: Stack) -> None:
    await bot.sim.player.comment(IG_ACCOUNT, "gina", "reel2", "GUIDE please")
    await bot.run_until(bot.clock.now() + M)
    await bot.sim.player.dm(IG_ACCOUNT, "gina", "yes!")
    await bot.run_until(bot.clock.now() + M)
    await bot.sim.player.dm(IG_ACCOUNT, "gina", "not an address")  # re-asked
    await bot.run_until(bot.clock.now() + M)
    await bot.sim.player.dm(IG_ACCOUNT, "gina", "Gina@Example.com")
    await bot.run_until(bot.clock.now() + M)
    row = await bot.rows(
        "SELECT email, tags, fields FROM contacts WHERE user_id = ?", bot.user("gina")
    )
    email, tags, fields = row[0]
    assert email.lower() == "gina@example.com"
    assert "lead" in tags and "guide_comment" in fields
    assert [e.basis for e in dms(bot, "gina")][0] == "private_reply"
    assert len(dms(bot, "gina")) == 4  # offer, ask, re-ask, the guide
    assert bot.sim.refused() == []


@pytest.fixture
async def extra(aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path, clock: Any) -> Any:
    folder = ROOT / "tests" / "e2e_flows"
    s = await make_stack(
        aiohttp_client,
        aiohttp_server,
        tmp_path,
        clock,
        flows_dir=str(folder / "flows"),
        templates_dir=str(folder / "templates"),
    )
    yield s
    await s.sim.close()


async def test_live_comment_story_reply_and_postback_triggers(extra: Stack) -> None:
    await extra.sim.player.live_comment(IG_ACCOUNT, "hana", "live1", "LINK?")
    await extra.sim.player.story_reply(IG_ACCOUNT, "ivan", "story1", "so good")
    await extra.sim.player.postback(IG_ACCOUNT, "jo", "GET_STARTED", "Get started")
    await extra.run_until(extra.clock.now() + M)
    assert [e.basis for e in dms(extra, "hana")] == ["private_reply"]
    assert [e.basis for e in dms(extra, "ivan")] == ["standard_window"]
    assert [e.basis for e in dms(extra, "jo")] == ["standard_window"]
    tags = await extra.rows("SELECT tags FROM contacts WHERE user_id = ?", extra.user("jo"))
    assert "vip" in tags[0][0]
    assert extra.sim.refused() == []


async def own_flows_stack(
    aiohttp_client: Any,
    aiohttp_server: Any,
    tmp_path: Path,
    clock: Any,
    flow_yaml: str,
    templates: dict[str, str] | None = None,
) -> Stack:
    """A stack on one flow file and its templates, written for the test."""
    flows_dir, templates_dir = tmp_path / "f", tmp_path / "t"
    flows_dir.mkdir()
    templates_dir.mkdir()
    (flows_dir / "f.yaml").write_text(flow_yaml)
    for name, text in (templates or {}).items():
        (templates_dir / name).write_text(text)
    return await make_stack(
        aiohttp_client,
        aiohttp_server,
        tmp_path,
        clock,
        flows_dir=str(flows_dir),
        templates_dir=str(templates_dir),
    )


async def test_a_template_that_fails_at_runtime_sends_nothing_and_says_why(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path, clock: Any
) -> None:
    s = await own_flows_stack(
        aiohttp_client,
        aiohttp_server,
        tmp_path,
        clock,
        "flows:\n  - id: f\n    trigger: {type: dm, keywords: [hello]}\n    steps:\n"
        "      - {id: s, type: send, template: x.j2}\n",
        # Renders with `bot check`'s sample data; fails on a real contact without a name.
        {"x.j2": "Hello {{ contact.name.upper() }}, part one."},
    )
    try:
        await s.sim.player.dm(IG_ACCOUNT, "kim", "hello")
        await s.run_until(s.clock.now() + M)
        assert s.sim.log.entries == []  # not even part of it
        [(reason, detail)] = await s.rows(
            "SELECT reason, detail FROM send_log WHERE outcome = 'dropped'"
        )
        assert reason == "template_failed" and "x.j2" in detail
    finally:
        await s.sim.close()


async def test_an_ig_me_referral_link_starts_its_flow_and_opens_the_window(bot: Stack) -> None:
    await bot.sim.player.referral(IG_ACCOUNT, "lee", "guide")
    await bot.run_until(bot.clock.now() + M)
    await bot.sim.player.dm(IG_ACCOUNT, "lee", "lee@example.org")
    await bot.run_until(bot.clock.now() + M)
    assert [e.basis for e in dms(bot, "lee")] == ["standard_window", "standard_window"]
    row = await bot.rows("SELECT email, tags FROM contacts WHERE user_id = ?", bot.user("lee"))
    assert row[0][0] == "lee@example.org" and "lead" in row[0][1]
    assert bot.sim.refused() == []


async def test_a_run_that_times_out_with_nothing_to_send_ends_and_fires_once(bot: Stack) -> None:
    # Nobody answers the private reply: the 7-day wait_answer times out with no on_timeout.
    await bot.sim.player.comment(IG_ACCOUNT, "alice", "reel1", "PRICING")
    await bot.run_until(bot.clock.now() + M)
    bot.clock.advance(7 * D)
    for _ in range(3):  # a few more dispatcher ticks at the same moment
        await bot.process()
    assert await bot.rows("SELECT flow_id FROM flow_runs") == []  # the run is over
    timeouts = await bot.rows("SELECT note FROM flow_notes WHERE note LIKE '%no reply within%'")
    assert len(timeouts) == 1  # it timed out once, not at every tick
    assert bot.next_wake is None  # and nothing is left to wake the dispatcher for


async def test_a_flow_that_only_tags_counts_as_started_for_its_cooldown(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path, clock: Any
) -> None:
    s = await own_flows_stack(
        aiohttp_client,
        aiohttp_server,
        tmp_path,
        clock,
        "flows:\n  - id: interested\n    trigger: {type: dm, keywords: [interested]}\n"
        "    guards: {cooldown: 1d}\n    steps:\n"
        "      - {id: mark, type: tag, tags: [warm]}\n"
        "      - {id: unmark, type: untag, tags: [cold]}\n",
    )
    try:
        for _ in range(3):
            await s.sim.player.dm(IG_ACCOUNT, "kim", "interested!")
            await s.run_until(s.clock.now() + M)
        started = await s.rows("SELECT note FROM flow_notes WHERE note LIKE 'flow % started%'")
        assert len(started) == 1  # the cooldown held: the first start was recorded
        assert await s.rows("SELECT flow_id FROM flow_runs") == []
    finally:
        await s.sim.close()
