"""Fixtures for the simulator: a virtual clock, a two-account simulator, its Graph API on
loopback, and a fake bot that records (and verifies) every webhook it receives."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bot.clock import VirtualClock, utc
from bot.simulator import Simulator, SimulatorRules, create_simulator_app

SECRET = "sim-app-secret"
IG = "17841400000000001"
FB = "104000000000001"
TOKENS = {IG: "ig-token-abc", FB: "page-token-xyz"}
START = utc(2026, 1, 5, 9, 0, 0, 250_613)

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(START)


@pytest.fixture
def rules() -> SimulatorRules:
    return SimulatorRules()


@pytest.fixture
async def sim(clock: VirtualClock, rules: SimulatorRules) -> AsyncIterator[Simulator]:
    s = Simulator(
        clock, [(IG, "instagram", TOKENS[IG]), (FB, "messenger", TOKENS[FB])], SECRET, rules=rules
    )
    yield s
    await s.close()


@pytest.fixture
async def graph(aiohttp_client: ClientFactory, sim: Simulator) -> TestClient[Any, Any]:
    """The simulator's Graph API on a real loopback server."""
    return await aiohttp_client(create_simulator_app(sim))


@dataclass
class FakeBot:
    """Answers every webhook with `status`, keeping the raw bytes and headers it got."""

    url: str = ""
    status: int = 200
    received: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)

    def verified(self) -> list[bool]:
        out = []
        for body, headers in self.received:
            want = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            out.append(hmac.compare_digest(want, headers.get("X-Hub-Signature-256", "")))
        return out


@pytest.fixture
async def fake_bot(
    aiohttp_server: Callable[..., Awaitable[TestServer]], sim: Simulator
) -> FakeBot:
    bot = FakeBot()

    async def webhook(request: web.Request) -> web.Response:
        bot.received.append((await request.read(), dict(request.headers)))
        return web.Response(status=bot.status, text="ok")

    app = web.Application()
    app.router.add_post("/webhook", webhook)
    server = await aiohttp_server(app)
    bot.url = str(server.make_url("/webhook"))
    sim.webhook_url = bot.url
    return bot


def text(t: str) -> dict[str, Any]:
    return {"text": t}


async def send(
    graph: TestClient[Any, Any],
    account: str,
    recipient: dict[str, str],
    message: dict[str, Any] | None = None,
    *,
    token: str | None = None,
    version: str = "/v21.0",
    **extra: Any,
) -> tuple[int, dict[str, Any]]:
    """POST /{account}/messages with a Bearer token; returns (status, JSON body)."""
    body: dict[str, Any] = {"recipient": recipient, **extra}
    if message is not None:
        body["message"] = message
    auth = TOKENS.get(account, "") if token is None else token
    resp = await graph.post(
        f"{version}/{account}/messages", json=body, headers={"Authorization": f"Bearer {auth}"}
    )
    return resp.status, await resp.json()


def error_of(data: dict[str, Any]) -> tuple[int, int | None]:
    err = data["error"]
    assert err["type"] == "OAuthException" and err["fbtrace_id"]
    return err["code"], err.get("error_subcode")
