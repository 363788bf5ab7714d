"""Hot reload: a valid change takes effect without a restart; an invalid one is rejected with
the `bot check` message and the running flows stay in force."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from bot.app import reload_flows
from tests.conftest import IG_ACCOUNT, make_stack

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def bot(aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path, clock: Any) -> Any:
    shutil.copytree(ROOT / "flows", tmp_path / "flows")
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    s = await make_stack(
        aiohttp_client,
        aiohttp_server,
        tmp_path,
        clock,
        flows_dir=str(tmp_path / "flows"),
        templates_dir=str(tmp_path / "templates"),
    )
    yield s
    await s.sim.close()


async def test_a_valid_change_takes_effect_without_a_restart(bot: Any, tmp_path: Path) -> None:
    flow = tmp_path / "flows" / "pricing.yaml"
    flow.write_text(
        flow.read_text().replace("keywords: [pricing, price, prices, cost]", "keywords: [tarif]")
    )
    assert reload_flows(bot.rt)
    await bot.sim.player.comment(IG_ACCOUNT, "alice", "reel1", "PRICING")
    await bot.sim.player.comment(IG_ACCOUNT, "bob", "reel1", "tarif?")
    await bot.process()
    replied = {e.user_id for e in bot.sim.accepted() if e.basis == "private_reply"}
    assert replied == {bot.user("bob")}


async def test_an_invalid_change_is_rejected_and_the_old_flows_keep_running(
    bot: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flow = tmp_path / "flows" / "pricing.yaml"
    flow.write_text(flow.read_text().replace("keywords:", "keywrods:"))
    with caplog.at_level(logging.ERROR):
        assert not reload_flows(bot.rt)
    assert "did you mean" in caplog.text and "pricing.yaml" in caplog.text
    await bot.sim.player.comment(IG_ACCOUNT, "alice", "reel1", "PRICING")
    await bot.process()
    assert [e.basis for e in bot.sim.accepted()] == ["private_reply"]


async def test_a_template_linked_outside_its_folder_is_never_sent(
    bot: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = tmp_path / "ig-token"
    secret.write_text("EAAG-secret-token-123")
    template = tmp_path / "templates" / "pricing" / "private_reply.j2"
    template.unlink()
    template.symlink_to(secret)
    with caplog.at_level(logging.ERROR):
        assert not reload_flows(bot.rt)
    assert f"a link to {secret}, outside the templates folder" in caplog.text
    await bot.sim.player.comment(IG_ACCOUNT, "alice", "reel1", "PRICING")
    await bot.process()
    sent = [json.dumps(e.body) for e in bot.sim.accepted()]
    assert len(sent) == 1 and "Thanks for asking about pricing" in sent[0]
    assert not any("EAAG-secret" in s for s in sent)
