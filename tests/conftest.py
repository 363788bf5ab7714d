"""Shared fixtures: a virtual clock, a real SQLite file, and the running app with signed posts."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import settings

from bot.app import RUNTIME, Runtime, create_app
from bot.clock import VirtualClock, utc
from bot.config import Config, config_from_mapping
from bot.webhook import sign

# Hypothesis' per-example deadline is a timing assertion: on a shared 2-core machine it fails
# at random. Speed is measured in bench/, never in tests.
settings.register_profile("bot", deadline=None)
settings.load_profile("bot")

APP_SECRET = "test-app-secret-123"
VERIFY_TOKEN = "test-verify-token"
IG_ACCOUNT = "17841400000000001"
FB_PAGE = "100000000000001"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="run soak and crash tests too")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(utc(2026, 3, 2, 11, 0, 0, 618_734))


def make_config(tmp_path: Path, **overrides: Any) -> Config:
    data: dict[str, Any] = {
        "app_secret": APP_SECRET,
        "verify_token": VERIFY_TOKEN,
        "database": {"path": str(tmp_path / "bot.sqlite3")},
        "accounts": [
            {"id": IG_ACCOUNT, "platform": "instagram", "token": "ig-token-abc"},
            {"id": FB_PAGE, "platform": "messenger", "token": "page-token-xyz"},
        ],
    }
    data.update(overrides)
    return config_from_mapping(data, env={}, base=tmp_path)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    config: Config,
    clock: VirtualClock,
) -> TestClient[Any, Any]:
    """The daemon's app on a real loopback server; workers are drained by the test."""
    app = create_app(config, clock=clock, start_workers=False)
    return await aiohttp_client(app)


def runtime(client: TestClient[Any, Any]) -> Runtime:
    return client.server.app[RUNTIME]  # type: ignore[union-attr]


def body_of(payload: Any) -> bytes:
    return payload if isinstance(payload, bytes) else json.dumps(payload).encode()


async def post_signed(
    client: TestClient[Any, Any], payload: Any, *, secret: str = APP_SECRET, path: str = "/webhook"
) -> int:
    body = body_of(payload)
    resp = await client.post(
        path,
        data=body,
        headers={
            "X-Hub-Signature-256": sign(secret.encode(), body),
            "Content-Type": "application/json",
        },
    )
    await resp.read()
    return resp.status


def ig_comment(
    comment_id: str,
    text: str,
    *,
    user: str | None = "user-1",
    media: str = "media-1",
    time_s: int = 1772449200,
    field: str = "comments",
    account: str = IG_ACCOUNT,
) -> dict[str, Any]:
    value: dict[str, Any] = {"id": comment_id, "text": text, "media": {"id": media}}
    if user is not None:
        value["from"] = {"id": user, "username": f"{user}_name"}
    return {
        "object": "instagram",
        "entry": [{"id": account, "time": time_s, "changes": [{"field": field, "value": value}]}],
    }


def ig_dm(
    mid: str,
    text: str,
    *,
    user: str = "user-1",
    ts_ms: int = 1772449200000,
    account: str = IG_ACCOUNT,
    echo: bool = False,
) -> dict[str, Any]:
    sender, recipient = (account, user) if echo else (user, account)
    message: dict[str, Any] = {"mid": mid, "text": text}
    if echo:
        message["is_echo"] = True
    return {
        "object": "instagram",
        "entry": [
            {
                "id": account,
                "time": ts_ms,
                "messaging": [
                    {
                        "sender": {"id": sender},
                        "recipient": {"id": recipient},
                        "timestamp": ts_ms,
                        "message": message,
                    }
                ],
            }
        ],
    }


# --- the whole stack: the bot and the Graph API simulator on loopback, one virtual clock ----


class Stack:
    """The daemon's app wired to the simulator both ways, driven step by step by a test."""

    def __init__(self, client: TestClient[Any, Any], sim: Any, clock: VirtualClock) -> None:
        self.client = client
        self.sim = sim
        self.clock = clock
        self.next_wake: Any = None

    @property
    def rt(self) -> Runtime:
        return runtime(self.client)

    def user(self, name: str) -> str:
        return str(self.sim.user_id(name))

    async def process(self) -> None:
        """Process what the webhook stored, then fire and send whatever is due now."""
        assert self.rt.worker is not None and self.rt.dispatcher is not None
        await self.rt.worker.drain()
        self.next_wake = await self.rt.dispatcher.tick()
        await self.sim.drain()
        await self.rt.worker.drain()

    async def run_until(self, until: Any, *, step: Any = None) -> None:
        """Move the clock to `until`, stopping at every time the sender asked to wake."""
        await self.process()
        while True:
            wake = self.next_wake
            target = until if wake is None or wake > until else wake
            if step is not None and target - self.clock.now() > step:
                target = self.clock.now() + step
            if target > self.clock.now():
                self.clock.set(target)
            await self.process()
            if self.clock.now() >= until:
                return

    async def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return await query(self.rt, sql, *args)


async def query(rt: Runtime, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows from the main file, or from the inbox file for queries on the inbox table."""
    db = rt.inbox_db if re.search(r"\bFROM inbox\b", sql) else rt.db
    assert db is not None
    async with db.reader.execute(sql, args) as cur:
        return [tuple(r) for r in await cur.fetchall()]


async def make_stack(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    aiohttp_server: Any,
    tmp_path: Path,
    clock: VirtualClock,
    *,
    sim_tokens: dict[str, str] | None = None,
    start_workers: bool = False,
    **config_overrides: Any,
) -> Stack:
    from aiohttp.test_utils import TestServer

    from bot.simulator import Simulator, create_simulator_app

    # The simulator comes first (the bot's accounts point at its URL); it learns the bot's
    # webhook URL once the bot is listening.
    base = make_config(tmp_path)
    accounts = [
        (a.id, a.platform.value, (sim_tokens or {}).get(a.id, a.token)) for a in base.accounts
    ]
    sim = Simulator(clock, accounts, APP_SECRET)
    server: TestServer = await aiohttp_server(create_simulator_app(sim))
    graph_url = str(server.make_url("")).rstrip("/")
    data_accounts = [
        {"id": a.id, "platform": a.platform.value, "token": a.token, "graph_base_url": graph_url}
        for a in base.accounts
    ]
    cfg = make_config(tmp_path, accounts=data_accounts, **config_overrides)
    client = await aiohttp_client(create_app(cfg, clock=clock, start_workers=start_workers))
    sim.webhook_url = str(client.make_url("/webhook"))
    return Stack(client, sim, clock)


@pytest.fixture
async def stack(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    aiohttp_server: Any,
    tmp_path: Path,
    clock: VirtualClock,
) -> Any:
    s = await make_stack(aiohttp_client, aiohttp_server, tmp_path, clock)
    yield s
    await s.sim.close()


ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def bot(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    aiohttp_server: Any,
    tmp_path: Path,
    clock: VirtualClock,
) -> Any:
    """The whole stack running the shipped example flows and templates."""
    s = await make_stack(
        aiohttp_client,
        aiohttp_server,
        tmp_path,
        clock,
        flows_dir=str(ROOT / "flows"),
        templates_dir=str(ROOT / "templates"),
    )
    yield s
    await s.sim.close()
