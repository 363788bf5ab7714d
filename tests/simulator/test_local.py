"""The in-process transport `bot simulate` uses answers the bot's Graph client exactly as the
simulator's HTTP server does: successes, Meta's refusals, and faults."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from bot.clock import VirtualClock
from bot.config import Account
from bot.events import Platform
from bot.graph import ErrorClass, GraphClient, GraphError
from bot.simulator import FaultKind, Simulator, create_simulator_app
from bot.simulator.local import LocalTransport

from .conftest import FB, IG, TOKENS


def _account(base_url: str, platform: Platform = Platform.INSTAGRAM) -> Account:
    ident = IG if platform is Platform.INSTAGRAM else FB
    login = "instagram" if platform is Platform.INSTAGRAM else "facebook"
    return Account(ident, platform, TOKENS[ident], login=login, graph_base_url=base_url)


@pytest.fixture
async def clients(
    sim: Simulator, clock: VirtualClock
) -> AsyncIterator[dict[str, tuple[GraphClient, str]]]:
    """The same simulator behind both transports: name -> (client, base URL)."""
    server = TestServer(create_simulator_app(sim))
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        yield {
            "http": (GraphClient(session, clock=clock), str(server.make_url("")).rstrip("/")),
            "local": (GraphClient(LocalTransport(sim), clock=clock), "http://sim.invalid"),
        }
    await server.close()


async def _outcome(client: GraphClient, account: Account, body: dict[str, Any]) -> Any:
    try:
        result = await client.send_message(account, body)
    except GraphError as exc:
        return ("error", exc.error_class, exc.code, exc.subcode, exc.status)
    return ("sent", result.recipient_id, bool(result.message_id))


@pytest.mark.parametrize("platform", [Platform.INSTAGRAM, Platform.MESSENGER])
async def test_sends_refusals_and_faults_look_the_same_in_process_and_over_http(
    clients: dict[str, tuple[GraphClient, str]], sim: Simulator, platform: Platform
) -> None:
    ident = IG if platform is Platform.INSTAGRAM else FB
    await sim.player.dm(ident, "alice", "hi")
    alice = {"recipient": {"id": sim.user_id("alice")}, "messaging_type": "RESPONSE"}
    stranger = {"recipient": {"id": "999"}, "messaging_type": "RESPONSE"}
    got: dict[str, list[Any]] = {}
    for name, (client, base) in clients.items():
        account = _account(base, platform)
        outcomes = [await _outcome(client, account, alice | {"message": {"text": "hi"}})]
        outcomes.append(await _outcome(client, account, stranger | {"message": {"text": "x"}}))
        outcomes.append(await _outcome(client, account, alice | {"message": {"text": "x" * 2001}}))
        for fault in (FaultKind.ERROR_5XX, FaultKind.DROP, FaultKind.ACCEPT_THEN_DROP):
            sim.faults.next(fault)
            outcomes.append(await _outcome(client, account, alice | {"message": {"text": "f"}}))
        got[name] = outcomes
    assert got["local"] == got["http"]
    local = got["local"]
    assert local[0][0] == "sent"
    assert [o[1] for o in local[1:]] == [
        ErrorClass.INVALID,  # a user who never wrote (#100/2018001)
        ErrorClass.INVALID,  # text over the limit (#100)
        ErrorClass.RETRY,  # 5xx
        # Dropped before or after Meta acted: either may have delivered it, never resent.
        ErrorClass.UNKNOWN_OUTCOME,
        ErrorClass.UNKNOWN_OUTCOME,
    ]


async def test_a_throttle_carries_the_same_regain_time_either_way(
    clients: dict[str, tuple[GraphClient, str]], sim: Simulator
) -> None:
    await sim.player.dm(IG, "alice", "hi")
    body = {
        "recipient": {"id": sim.user_id("alice")},
        "messaging_type": "RESPONSE",
        "message": {"text": "hi"},
    }
    sim.faults.throttle_minutes = 7
    regains = {}
    for name, (client, base) in clients.items():
        sim.faults.next(FaultKind.THROTTLE)
        with pytest.raises(GraphError) as caught:
            await client.send_message(_account(base), body)
        assert caught.value.error_class is ErrorClass.BACKOFF
        regains[name] = caught.value.retry_after
    assert regains["local"] == regains["http"] is not None
    assert regains["local"].total_seconds() == 7 * 60


async def test_an_unknown_path_is_metas_unknown_path_error(
    clients: dict[str, tuple[GraphClient, str]],
) -> None:
    for _, (client, base) in clients.items():
        with pytest.raises(GraphError) as caught:
            await client.get_profile(_account(base), "1/nothing/here")
        assert caught.value.code == 2500
