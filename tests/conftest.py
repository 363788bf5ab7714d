"""Shared fixtures: a virtual clock, a real SQLite file, and the running app with signed posts."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bot.app import RUNTIME, Runtime, create_app
from bot.clock import VirtualClock, utc
from bot.config import Config, config_from_mapping
from bot.webhook import sign

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
    return VirtualClock(utc(2026, 3, 2, 11, 0, 0))


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
