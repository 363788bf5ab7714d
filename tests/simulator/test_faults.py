"""Injected faults: the failures POLICY.md §5 tells the sender to survive."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from bot.clock import VirtualClock, to_resolution
from bot.simulator import FaultKind, Reason, Simulator

from .conftest import IG, START, TOKENS, error_of, send, text

Client = TestClient[Any, Any]


async def _open(sim: Simulator) -> dict[str, str]:
    await sim.player.dm(IG, "alice", "hi")
    return {"id": sim.user_id("alice")}


async def test_error_rate_gives_transient_5xx_and_is_logged(graph: Client, sim: Simulator) -> None:
    to = await _open(sim)
    sim.faults.error_rate = 1.0
    status, data = await send(graph, IG, to, text("x"))
    assert status == 500 and error_of(data)[0] == 2 and data["error"]["is_transient"]
    assert sim.refused()[-1].reason is Reason.FAULT_5XX and sim.refused()[-1].fault == "5xx"
    sim.faults.error_rate = 0.0
    assert (await send(graph, IG, to, text("x")))[0] == 200


async def test_error_rate_is_a_seeded_fraction(graph: Client, sim: Simulator) -> None:
    to = await _open(sim)
    sim.faults.error_rate = 0.3
    statuses = [(await send(graph, IG, to, text("x")))[0] for _ in range(40)]
    assert 4 <= statuses.count(500) <= 20 and statuses.count(200) + statuses.count(500) == 40


async def test_scripted_faults_come_first(graph: Client, sim: Simulator) -> None:
    to = await _open(sim)
    sim.faults.next(FaultKind.ERROR_5XX, 2)
    got = [(await send(graph, IG, to, text("x")))[0] for _ in range(3)]
    assert got == [500, 500, 200]


async def test_latency_runs_on_the_simulator_clock(
    graph: Client, sim: Simulator, clock: VirtualClock
) -> None:
    to = await _open(sim)
    sim.faults.latency = 2.0
    task = asyncio.create_task(send(graph, IG, to, text("slow")))
    for _ in range(2000):  # until the handler sleeps on the virtual clock
        if clock.next_wake() is not None:
            break
        await asyncio.sleep(0.001)
    assert not task.done()
    clock.advance(2)
    status, _ = await task
    assert status == 200 and sim.accepted()[-1].time == to_resolution(START) + timedelta(seconds=2)


async def test_dropped_connection_records_nothing(graph: Client, sim: Simulator) -> None:
    to = await _open(sim)
    sim.faults.next(FaultKind.DROP)
    with pytest.raises(aiohttp.ClientError):
        await send(graph, IG, to, text("x"))
    assert sim.accepted() == [] and sim.refused()[-1].reason is Reason.FAULT_DROP


async def test_accept_then_drop_is_sent_but_unknown_and_echoed(
    graph: Client, sim: Simulator, fake_bot: Any
) -> None:
    to = await _open(sim)
    sim.faults.next(FaultKind.ACCEPT_THEN_DROP)
    with pytest.raises(aiohttp.ClientError):
        await send(graph, IG, to, text("did it go?"))
    [entry] = sim.accepted()
    assert entry.fault == "accept_then_drop" and entry.message_id
    await sim.drain()
    echo = json.loads(fake_bot.received[-1][0])["entry"][0]["messaging"][0]
    assert echo["message"]["mid"] == entry.message_id and echo["message"]["is_echo"] is True


async def test_throttle_fault_carries_regain_time(
    graph: Client, sim: Simulator, clock: VirtualClock
) -> None:
    to = await _open(sim)
    sim.faults.throttle_for(clock.now(), timedelta(minutes=3), code=4)
    resp = await graph.post(
        f"/v21.0/{IG}/messages",
        json={"recipient": to, "message": text("x")},
        headers={"Authorization": f"Bearer {TOKENS[IG]}"},
    )
    assert resp.status == 400 and error_of(await resp.json())[0] == 4
    usage = json.loads(resp.headers["X-Business-Use-Case-Usage"])
    assert usage[IG][0]["estimated_time_to_regain_access"] == 3
    clock.advance(timedelta(minutes=3))
    assert (await send(graph, IG, to, text("x")))[0] == 200


async def test_timeout_hangs_longer_than_the_client_waits(graph: Client, sim: Simulator) -> None:
    to = await _open(sim)
    sim.faults.next(FaultKind.TIMEOUT)
    with pytest.raises(asyncio.TimeoutError):
        await graph.post(
            f"/v21.0/{IG}/messages",
            json={"recipient": to, "message": text("x")},
            headers={"Authorization": f"Bearer {TOKENS[IG]}"},
            timeout=aiohttp.ClientTimeout(total=0.1),
        )
    assert sim.accepted() == [] and sim.refused()[-1].reason is Reason.FAULT_TIMEOUT


async def test_faults_are_settable_over_http(graph: Client, sim: Simulator) -> None:
    to = await _open(sim)
    resp = await graph.post(
        "/_sim/faults", json={"next": [{"kind": "5xx", "count": 1}], "latency": 0}
    )
    assert resp.status == 200 and (await resp.json())["next"] == ["5xx"]
    assert (await send(graph, IG, to, text("x")))[0] == 500
    resp = await graph.post("/_sim/faults", json={"throttle_seconds": 60, "throttle_code": 613})
    assert (await send(graph, IG, to, text("x")))[0] == 400
    assert sim.refused()[-1].code == 613
    resp = await graph.post("/_sim/faults", json={"reset": True})
    assert (await resp.json())["throttled_until"] is None
    assert (await send(graph, IG, to, text("x")))[0] == 200
    resp = await graph.post("/_sim/faults", json={"nonsense": 1})
    assert resp.status == 400 and "nonsense" in (await resp.json())["error"]
