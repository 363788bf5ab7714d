"""`bot resume` and SIGHUP pick up a replaced token: after Meta refused the old one (code 190)
and the account paused, the operator writes the new token to its file and resumes; the
daemon reads its secrets again instead of calling with the old token and pausing again
(issue 13, item 22)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestServer

from bot.admin import resume_account
from bot.app import create_app, reload_secrets
from bot.config import load_config
from bot.policy import Intent
from bot.simulator import Simulator, create_simulator_app
from bot.store.db import Database
from bot.store.outbox import SendKind, enqueue
from tests.conftest import APP_SECRET, IG_ACCOUNT, VERIFY_TOKEN, Stack


async def _stack(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path, clock: Any
) -> tuple[Stack, Path]:
    sim = Simulator(clock, [(IG_ACCOUNT, "instagram", "the-new-token-2")], APP_SECRET)
    server: TestServer = await aiohttp_server(create_simulator_app(sim))
    token_file = tmp_path / "ig-token"
    token_file.write_text("the-old-token-1\n")
    settings = tmp_path / "bot.yaml"
    settings.write_text(
        "accounts:\n"
        f'  - {{id: "{IG_ACCOUNT}", platform: instagram, token_file: {token_file},'
        f' graph_base_url: "{str(server.make_url("")).rstrip("/")}"}}\n'
        f"app_secret: {APP_SECRET}\n"
        f"verify_token: {VERIFY_TOKEN}\n"
        f"database: {{path: {tmp_path / 'bot.sqlite3'}}}\n"
    )
    config = load_config(settings, env={})
    client = await aiohttp_client(create_app(config, clock=clock, start_workers=False))
    sim.webhook_url = str(client.make_url("/webhook"))
    return Stack(client, sim, clock), token_file


async def _queue(stack: Stack, user: str, text: str) -> None:
    db = stack.rt.db
    assert db is not None
    now = stack.clock.now()
    async with db.transaction() as conn:
        await enqueue(
            conn,
            account_id=IG_ACCOUNT,
            user_id=user,
            kind=SendKind.MESSAGE,
            intent=Intent(),
            message={"text": text},
            due_at=now,
            deadline=None,
            now=now,
        )


async def test_bot_resume_after_a_new_token_file_sends_with_the_new_token(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path, clock: Any
) -> None:
    stack, token_file = await _stack(aiohttp_client, aiohttp_server, tmp_path, clock)
    try:
        await stack.sim.player.dm(IG_ACCOUNT, "ann", "hi")
        await stack.process()
        await _queue(stack, stack.user("ann"), "hello ann")
        await stack.process()
        [refused] = stack.sim.refused()
        assert refused.code == 190  # the old token: paused
        paused = await stack.rows("SELECT paused_reason FROM account_state")
        assert paused and paused[0][0].startswith("token_invalid")
        # The operator writes the new token and runs `bot resume` (another process).
        token_file.write_text("the-new-token-2\n")
        other = await Database.open(tmp_path / "bot.sqlite3")
        try:
            assert await resume_account(stack.rt.config, other, IG_ACCOUNT)
        finally:
            await other.close()
        await stack.process()
        assert [e.body["message"]["text"] for e in stack.sim.accepted()] == ["hello ann"]
        assert len(stack.sim.refused()) == 1  # not paused again on the old token
    finally:
        await stack.sim.close()


async def test_sighup_reads_the_secrets_again(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path, clock: Any
) -> None:
    stack, token_file = await _stack(aiohttp_client, aiohttp_server, tmp_path, clock)
    try:
        token_file.write_text("the-new-token-2\n")  # replaced before anything went wrong
        assert await reload_secrets(stack.rt)  # what SIGHUP runs (bot.app.on_sighup)
        await stack.sim.player.dm(IG_ACCOUNT, "bea", "hi")
        await stack.process()
        await _queue(stack, stack.user("bea"), "hello bea")
        await stack.process()
        assert stack.sim.refused() == []
        assert [e.body["message"]["text"] for e in stack.sim.accepted()] == ["hello bea"]
        token_file.write_text("")  # an empty file now: refused, the token in use stays
        assert not await reload_secrets(stack.rt)
        assert stack.rt.config.accounts[0].token == "the-new-token-2"
    finally:
        await stack.sim.close()
