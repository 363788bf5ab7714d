"""Hot reload: a valid change takes effect without a restart; an invalid one is rejected with
the `bot check` message and the running flows stay in force. The check runs in a thread, so
webhooks are answered meanwhile; one reload runs at a time and the last change wins; and no
file, however hostile, ends the watcher."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot import app as bot_app
from bot.app import reload_flows, watch_flows
from bot.flowreload import in_thread
from tests.conftest import IG_ACCOUNT, ig_comment, make_stack, post_signed
from tests.hostile_yaml import HOSTILE

ROOT = Path(__file__).resolve().parent.parent
KEYWORDS = "keywords: [pricing, price, prices, cost]"


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


class Held:
    """Wraps a function that runs in a reload's thread and holds its result there until
    `release`.

    The wait is capped so that code calling it on the event loop (which the test could
    never release) goes on after a while and fails the test's assertions instead of hanging.
    """

    def __init__(self, real: Callable[..., Any], hold: int = 1) -> None:
        self.real = real
        self.loop = asyncio.get_running_loop()
        self.entered = asyncio.Event()
        self.release = threading.Event()
        self.finished: list[str] = []
        self.hold = hold
        self.calls = 0
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def __call__(self, *args: Any) -> Any:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            held = self.calls <= self.hold
        try:
            result = self.real(*args)  # what it read is from before the hold
            if held:
                self.loop.call_soon_threadsafe(self.entered.set)
                self.release.wait(10)
            return result
        finally:
            with self._lock:
                self.running -= 1
            self.finished.append("done")


def _edit_keywords(tmp_path: Path, keywords: str, was: str = KEYWORDS) -> None:
    flow = tmp_path / "flows" / "pricing.yaml"
    text = flow.read_text()
    assert was in text
    flow.write_text(text.replace(was, keywords))


async def _replied(bot: Any, *comments: tuple[str, str]) -> set[str]:
    for user, text in comments:
        await bot.sim.player.comment(IG_ACCOUNT, user, "reel1", text)
    await bot.process()
    return {e.user_id for e in bot.sim.accepted() if e.basis == "private_reply"}


async def _healthy(bot: Any) -> bool:
    resp = await bot.client.get("/healthz")
    await resp.read()
    return bool(resp.status == 200)


async def test_a_valid_change_takes_effect_without_a_restart(bot: Any, tmp_path: Path) -> None:
    _edit_keywords(tmp_path, "keywords: [tarif]")
    assert await reload_flows(bot.rt)
    replied = await _replied(bot, ("alice", "PRICING"), ("bob", "tarif?"))
    assert replied == {bot.user("bob")}


async def test_an_invalid_change_is_rejected_and_the_old_flows_keep_running(
    bot: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flow = tmp_path / "flows" / "pricing.yaml"
    flow.write_text(flow.read_text().replace("keywords:", "keywrods:"))
    with caplog.at_level(logging.ERROR):
        assert not await reload_flows(bot.rt)
    assert "did you mean" in caplog.text and "pricing.yaml" in caplog.text
    await bot.sim.player.comment(IG_ACCOUNT, "alice", "reel1", "PRICING")
    await bot.process()
    assert [e.basis for e in bot.sim.accepted()] == ["private_reply"]


async def test_webhooks_are_answered_while_a_reload_checks_the_flows(
    bot: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = Held(bot_app.load_flowset)
    monkeypatch.setattr(bot_app, "load_flowset", held)
    _edit_keywords(tmp_path, "keywords: [tarif]")
    reloading = reload_flows(bot.rt)
    await held.entered.wait()
    assert await post_signed(bot.client, ig_comment("c-during", "hello")) == 200
    assert held.finished == []  # the 200 came while the check was still held in its thread
    held.release.set()
    assert await reloading
    assert await _replied(bot, ("bob", "tarif")) == {bot.user("bob")}


async def test_one_reload_at_a_time_and_a_change_during_one_is_loaded_after_it(
    bot: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = Held(bot_app.load_flowset)
    monkeypatch.setattr(bot_app, "load_flowset", held)
    _edit_keywords(tmp_path, "keywords: [tarif]")
    first = reload_flows(bot.rt)
    await held.entered.wait()
    _edit_keywords(tmp_path, "keywords: [preis]", "keywords: [tarif]")  # during the check
    others = [reload_flows(bot.rt), reload_flows(bot.rt)]
    held.release.set()
    assert [await first, *[await o for o in others]] == [True, True, True]
    assert (held.calls, held.most_at_once) == (2, 1)  # the held check, then one more
    replied = await _replied(bot, ("alice", "tarif"), ("bob", "preis"))
    assert replied == {bot.user("bob")}


async def test_webhooks_are_answered_while_the_watcher_scans_the_files(
    bot: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    watch_flows(bot.rt)
    assert bot.rt.watcher is not None
    await bot.rt.watcher.scan_now()
    held = Held(bot_app.files_under)
    monkeypatch.setattr(bot_app, "files_under", held)
    _edit_keywords(tmp_path, "keywords: [tarif]")
    scanned = bot.rt.watcher.scan_now()
    await held.entered.wait()
    assert await post_signed(bot.client, ig_comment("c-during", "hello")) == 200
    assert not scanned.done()
    held.release.set()
    await scanned
    assert await _replied(bot, ("bob", "tarif")) == {bot.user("bob")}


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_a_hostile_file_neither_ends_the_watcher_nor_blocks_the_next_edit(
    bot: Any, tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    watch_flows(bot.rt)
    assert bot.rt.watcher is not None
    await bot.rt.watcher.scan_now()
    hostile = tmp_path / "flows" / "hostile.yaml"
    hostile.write_text(HOSTILE[name].text)
    with caplog.at_level(logging.ERROR):
        await bot.rt.watcher.scan_now()
    assert f"hostile.yaml:{HOSTILE[name].line}:{HOSTILE[name].column}: error" in caplog.text
    assert bot.rt.dead == [] and await _healthy(bot)
    hostile.unlink()
    _edit_keywords(tmp_path, "keywords: [tarif]")
    await bot.rt.watcher.scan_now()
    assert await _replied(bot, ("alice", "PRICING"), ("bob", "tarif")) == {bot.user("bob")}
    assert "flow-watcher" in {t.get_name() for t in bot.rt.tasks}


async def test_the_watcher_outlives_a_failing_scan_and_a_failing_reload(
    bot: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    watch_flows(bot.rt)
    assert bot.rt.watcher is not None
    await bot.rt.watcher.scan_now()
    real_scan, real_load = bot_app.files_under, bot_app.load_flowset

    def broken(*args: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(bot_app, "files_under", broken)
    await bot.rt.watcher.scan_now()
    monkeypatch.setattr(bot_app, "files_under", real_scan)
    monkeypatch.setattr(bot_app, "load_flowset", broken)
    (tmp_path / "flows" / "new.yaml").write_text("flows: []\n")
    await bot.rt.watcher.scan_now()
    assert bot.rt.dead == [] and await _healthy(bot)
    monkeypatch.setattr(bot_app, "load_flowset", real_load)
    _edit_keywords(tmp_path, "keywords: [tarif]")
    await bot.rt.watcher.scan_now()
    assert await _replied(bot, ("alice", "PRICING"), ("bob", "tarif")) == {bot.user("bob")}


async def test_a_template_linked_outside_its_folder_is_never_sent(
    bot: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = tmp_path / "ig-token"
    secret.write_text("EAAG-secret-token-123")
    template = tmp_path / "templates" / "pricing" / "private_reply.j2"
    template.unlink()
    template.symlink_to(secret)
    with caplog.at_level(logging.ERROR):
        assert not await reload_flows(bot.rt)
    assert f"a link to {secret}, outside the templates folder" in caplog.text
    await bot.sim.player.comment(IG_ACCOUNT, "alice", "reel1", "PRICING")
    await bot.process()
    sent = [json.dumps(e.body) for e in bot.sim.accepted()]
    assert len(sent) == 1 and "Thanks for asking about pricing" in sent[0]
    assert not any("EAAG-secret" in s for s in sent)


async def test_a_reload_leaves_the_collector_as_it_found_it(bot: Any, tmp_path: Path) -> None:
    before = gc.get_threshold()
    assert await reload_flows(bot.rt)
    (tmp_path / "flows" / "bad.yaml").write_text("flows: &x [*x]\n")
    assert not await reload_flows(bot.rt)
    assert gc.get_threshold() == before and gc.isenabled()


async def test_no_reload_starts_once_the_app_has_stopped(bot: Any) -> None:
    await bot.client.close()
    assert not await reload_flows(bot.rt)


def test_a_stop_does_not_wait_for_a_check_still_running() -> None:
    release, finished = threading.Event(), []

    def slow_check() -> None:
        release.wait(10)
        finished.append("done")

    async def main() -> None:
        checking = asyncio.ensure_future(in_thread(slow_check, "flow-check"))
        await asyncio.sleep(0)
        checking.cancel()

    asyncio.run(main())  # joins the default executor's threads, as `bot run` does on exit
    assert finished == []
    release.set()
