"""The simulator's control panel: drive a running bot by hand from another process.

`POST /_sim/actions` runs one scripted user action (the CLI's `bot sandbox comment ...` calls it
through `send_action`); `/_sim/log`, `/_sim/faults` and `/_sim/deliveries` show and steer.
"""

from __future__ import annotations

import inspect
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from bot.simulator.core import SIMULATOR
from bot.simulator.player import Delivered, Player
from bot.simulator.rules import SimulatorError

__all__ = ["ACTIONS", "add_control_routes", "run_action", "send_action"]


def add_control_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/_sim/log", _get_log)
    router.add_get("/_sim/faults", _get_faults)
    router.add_post("/_sim/faults", _post_faults)
    router.add_post("/_sim/actions", _post_action)
    router.add_get("/_sim/deliveries", _get_deliveries)


def _live(player: Player, account: str | None, media: str, *, start: bool) -> dict[str, Any]:
    acct = player.sim.account(account)
    (player.sim.live_start if start else player.sim.live_stop)(acct.id, media)
    return {
        "action": "live_start" if start else "live_stop",
        "account_id": acct.id,
        "media": media,
    }


ACTIONS = (
    "comment",
    "live_comment",
    "dm",
    "story_reply",
    "story_mention",
    "quick_reply",
    "postback",
    "referral",
    "optin",
    "stop",
    "resume",
    "read",
    "react",
    "live_start",
    "live_stop",
)


async def run_action(player: Player, action: Mapping[str, Any]) -> dict[str, Any]:
    """Run one `/_sim/actions` body, e.g. {"action": "comment", "user": "alice", ...}."""
    args = dict(action)
    name = args.pop("action", None)
    if name not in ACTIONS:
        raise SimulatorError(f"unknown action {name!r}; known: {', '.join(ACTIONS)}")
    account = args.pop("account", None)
    if name in ("live_start", "live_stop"):
        if set(args) != {"media"}:
            raise SimulatorError(f"{name} takes account (optional) and media")
        return _live(player, account, str(args["media"]), start=name == "live_start")
    method = getattr(player, name)
    try:
        inspect.signature(method).bind(account, **args)
    except TypeError as exc:
        raise SimulatorError(f"{name}: {exc}") from None
    delivered: Delivered = await method(account, **args)
    return delivered.to_dict()


def send_action(sim_url: str, action: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Drive a running simulator from another process (the CLI's `bot sandbox ...`)."""
    url = sim_url.rstrip("/") + "/_sim/actions"
    data = json.dumps(action).encode("utf-8")
    req = urllib.request.Request(url, data, {"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            result: dict[str, Any] = json.loads(resp.read())
            return result
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            message = exc.reason
        raise SimulatorError(f"the simulator refused the action: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise SimulatorError(f"cannot reach the simulator at {sim_url}: {exc}") from None


async def _get_log(request: web.Request) -> web.StreamResponse:
    return web.json_response(request.app[SIMULATOR].log.to_json())


async def _get_faults(request: web.Request) -> web.StreamResponse:
    return web.json_response(request.app[SIMULATOR].faults.to_dict())


async def _post_faults(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIMULATOR]
    try:
        changes = await request.json()
        if not isinstance(changes, dict):
            raise ValueError("the body must be a JSON object of fault settings")
        sim.faults.update(changes, sim.clock.now())
    except (ValueError, TypeError, KeyError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(sim.faults.to_dict())


async def _post_action(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIMULATOR]
    try:
        action = await request.json()
        if not isinstance(action, dict):
            raise SimulatorError("the body must be a JSON object with an 'action'")
        result = await run_action(sim.player, action)
    except (ValueError, SimulatorError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(result)


async def _get_deliveries(request: web.Request) -> web.StreamResponse:
    return web.json_response([d.to_dict() for d in request.app[SIMULATOR].deliveries])
