"""A run left waiting by a reload never swallows the user's messages (issue 13, item 19)."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

from bot.flows.loader import load_flowset
from tests.conftest import IG_ACCOUNT, ROOT, make_stack

M = timedelta(minutes=1)


async def test_a_run_whose_waiting_step_stopped_waiting_ends_and_the_message_starts_anew(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path, clock: Any
) -> None:
    shutil.copytree(ROOT / "flows", tmp_path / "flows")
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    bot = await make_stack(
        aiohttp_client,
        aiohttp_server,
        tmp_path,
        clock,
        flows_dir=str(tmp_path / "flows"),
        templates_dir=str(tmp_path / "templates"),
    )
    try:
        await bot.sim.player.comment(IG_ACCOUNT, "alice", "reel1", "PRICING")
        await bot.run_until(bot.clock.now() + M)
        runs = await bot.rows("SELECT flow_id, run FROM flow_runs")
        assert [f for f, _ in runs] == ["pricing"] and '"waiting_for":"reply"' in runs[0][1]
        # The creator turns the step the run waits on into a tag step, and reloads.
        (tmp_path / "flows" / "pricing.yaml").write_text(
            "flows:\n"
            "  - id: pricing\n"
            "    platforms: [instagram]\n"
            "    trigger: {type: comment, keywords: [pricing], match: word}\n"
            "    steps:\n"
            "      - {id: dm_pricing, type: private_reply, template: pricing/private_reply.j2}\n"
            "      - {id: wait_answer, type: tag, tags: [asked_price]}\n"
        )
        assert bot.rt.engine is not None
        bot.rt.engine.flowset = load_flowset(
            tmp_path / "flows", tmp_path / "templates", bot.rt.profile
        )
        await bot.sim.player.dm(IG_ACCOUNT, "alice", "menu")
        await bot.run_until(bot.clock.now() + M)
        dms = [e for e in bot.sim.accepted(user=bot.user("alice")) if e.endpoint == "messages"]
        assert len(dms) >= 2, "the DM started nothing: the stale run swallowed it"
        assert await bot.rows("SELECT flow_id FROM flow_runs WHERE flow_id = 'pricing'") == []
        notes = [n for (n,) in await bot.rows("SELECT note FROM flow_notes")]
        assert any("no longer waits for a reply" in n for n in notes)
        assert bot.sim.refused() == []
    finally:
        await bot.sim.close()
