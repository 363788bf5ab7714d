"""The Graph API side of the simulator: it answers like Meta (POLICY.md §3, §5).

`answer` takes one `GraphCall` and gives one `GraphAnswer`. Over HTTP, `create_simulator_app`
serves it (routes accept any version prefix, `/v21.0/...`, or none); `bot simulate` calls it in
process (bot/simulator/local.py), so both see exactly the same answers. `/_sim/*` routes are the
control panel: the send log, faults, and user actions for driving a running bot by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from bot.simulator.control import add_control_routes
from bot.simulator.core import SIMULATOR, Simulator
from bot.simulator.faults import FaultKind
from bot.simulator.rules import Reason, Refused, Verdict, refuse
from bot.simulator.validate import parse_send

__all__ = ["SIMULATOR", "GraphAnswer", "GraphCall", "answer", "create_simulator_app"]

_THROTTLE_CODES = {4, 17, 32, 613, 80002, 80006}
_PROFILE_FIELDS = {
    "id",
    "name",
    "username",
    "profile_pic",
    "follower_count",
    "is_user_follow_business",
    "is_business_follow_user",
    "is_verified_user",
    "first_name",  # Messenger's User Profile API
    "last_name",
    "locale",
    "timezone",
}
# /{id} or /{id}/{edge}, after an optional version: /v21.0/1784/messages.
_PATH = re.compile(r"/(?:v\d+(?:\.\d+)?/)?(?P<id>[^/]+)(?:/(?P<edge>[^/]+))?/?")


@dataclass(frozen=True, slots=True)
class GraphCall:
    """One request as Meta reads it: `headers` must look names up case-insensitively."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes = b""
    content_type: str = ""  # the media type alone, without parameters


@dataclass(frozen=True, slots=True)
class GraphAnswer:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    dropped: bool = False  # the connection closes without an answer (a fault)


_DROPPED = GraphAnswer(0, dropped=True)


def create_simulator_app(sim: Simulator) -> web.Application:
    app = web.Application()
    app[SIMULATOR] = sim
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_release_hung)
    add_control_routes(app.router)
    app.router.add_route("*", "/{path:.*}", _http)
    return app


async def _http(request: web.Request) -> web.StreamResponse:
    call = GraphCall(
        request.method,
        request.path,
        request.query,
        request.headers,
        await request.read(),
        request.content_type,
    )
    a = await answer(request.app[SIMULATOR], call)
    if a.dropped:
        # Close the connection without an answer: the client sees a disconnect.
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)
    return web.Response(status=a.status, body=a.body, headers=a.headers)


async def answer(sim: Simulator, call: GraphCall) -> GraphAnswer:
    """Route one call to its endpoint, as Meta's Graph API does."""
    m = _PATH.fullmatch(call.path)
    if m is not None:
        target, edge = m["id"], m["edge"]
        if call.method == "POST":
            if edge == "messages":
                return await _messages(sim, call, target)
            if edge in ("replies", "comments"):
                return await _public_reply(sim, call, target, edge)
            if edge == "subscribed_apps":
                return await _subscribe(sim, call, target)
        elif call.method == "GET":
            if edge is None:
                return await _profile(sim, call, target)
            if edge == "subscribed_apps":
                return _subscriptions(sim, call, target)
    unknown = f"Unknown path components: {call.path}"
    return _error(sim, refuse(Reason.BAD_PARAMETER, unknown, code=2500))


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> GraphAnswer:
    return GraphAnswer(
        status,
        json.dumps(data).encode(),
        {"Content-Type": "application/json; charset=utf-8", **(headers or {})},
    )


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    sim = app[SIMULATOR]
    sim.closing.clear()
    yield
    await sim.close()


async def _release_hung(app: web.Application) -> None:
    """Let requests held by a timeout fault go, so the server can shut down promptly."""
    app[SIMULATOR].closing.set()


# -- the envelope ---------------------------------------------------------------------------


def _error(sim: Simulator, r: Refused, account_id: str = "") -> GraphAnswer:
    """Meta's error envelope; throttles carry X-Business-Use-Case-Usage (§5)."""
    message = r.message if r.message.startswith("(#") else f"(#{r.code}) {r.message}"
    err: dict[str, Any] = {"message": message, "type": "OAuthException", "code": r.code}
    if r.subcode is not None:
        err["error_subcode"] = r.subcode
    if r.code in (1, 2):
        err["is_transient"] = True
    err["fbtrace_id"] = sim.ids.trace()
    headers = {}
    if r.code in _THROTTLE_CODES:
        minutes = max(1, math.ceil((r.regain_after or timedelta(minutes=1)).total_seconds() / 60))
        usage = {
            "call_count": 100,
            "total_cputime": 100,
            "total_time": 100,
            "estimated_time_to_regain_access": minutes,
        }
        account = sim.model.accounts.get(account_id)
        kind = str(account.platform) if account else "messenger"
        usage_by_id = {account_id or "0": [{"type": kind, **usage}]}
        headers["X-Business-Use-Case-Usage"] = json.dumps(usage_by_id)
    return _json({"error": err}, r.http_status, headers)


def _params(call: GraphCall) -> dict[str, Any] | Refused:
    """Query and body merged; JSON or form-encoded, like the Graph API accepts."""
    params: dict[str, Any] = dict(call.query)
    if call.body:
        if call.content_type == "application/json":
            try:
                body = json.loads(call.body)
            except ValueError:
                return refuse(Reason.BAD_PARAMETER, "(#100) the body is not valid JSON")
            if not isinstance(body, dict):
                return refuse(Reason.BAD_PARAMETER, "(#100) the body must be a JSON object")
            params.update(body)
        elif call.content_type == "application/x-www-form-urlencoded":
            form = call.body.decode("utf-8", errors="replace")
            params.update(parse_qsl(form, keep_blank_values=True))
    return params


def _token(call: GraphCall, params: Mapping[str, Any]) -> str | None:
    auth = call.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() in ("bearer", "oauth") and value.strip():
        return value.strip()
    token = params.get("access_token")
    return str(token) if token else None


def _loggable(params: Mapping[str, Any]) -> dict[str, Any]:
    """Never log a token (DESIGN.md); parse JSON-string fields so the log reads like JSON."""
    out = {}
    for k, v in params.items():
        if k == "access_token":
            continue
        if isinstance(v, str) and v[:1] in "{[":
            with contextlib.suppress(ValueError):
                v = json.loads(v)
        out[k] = v
    return out


# -- faults -------------------------------------------------------------------------------


async def _faulted(
    sim: Simulator, endpoint: str, account_id: str, body: dict[str, Any]
) -> tuple[FaultKind | None, GraphAnswer | None]:
    """Apply latency, then the fault picked for this call; a response ends the call here."""
    f = sim.faults
    if f.latency > 0:
        await sim.clock.sleep_until(sim.clock.now() + timedelta(seconds=f.latency))
    now = sim.clock.now()
    kind = f.pick()
    if f.throttled_until is not None and now < f.throttled_until and kind is None:
        kind = FaultKind.THROTTLE
    if kind is None or kind is FaultKind.ACCEPT_THEN_DROP:
        return kind, None

    def log(r: Refused, status: int) -> None:
        sim.log.add(
            time=now,
            endpoint=endpoint,
            account_id=account_id,
            body=body,
            verdict=r,
            fault=kind.value if kind else None,
            http_status=status,
        )

    if kind is FaultKind.ERROR_5XX:
        r = refuse(
            Reason.FAULT_5XX, "An unexpected error has occurred. Please retry your request later."
        )
        log(r, 500)
        return kind, _error(sim, r, account_id)
    if kind is FaultKind.THROTTLE:
        until = f.throttled_until if f.throttled_until and now < f.throttled_until else None
        regain = (until - now) if until else timedelta(minutes=f.throttle_minutes)
        r = refuse(
            Reason.FAULT_THROTTLE,
            "Calls to this api have exceeded the rate limit.",
            code=f.throttle_code,
            regain_after=regain,
        )
        log(r, 400)
        return kind, _error(sim, r, account_id)
    if kind is FaultKind.TIMEOUT:
        log(refuse(Reason.FAULT_TIMEOUT, "no answer (timeout fault)"), 0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sim.closing.wait(), timeout=f.hang_seconds)
        return kind, _DROPPED
    log(refuse(Reason.FAULT_DROP, "connection dropped (drop fault)"), 0)
    return kind, _DROPPED


def _log_verdict(
    sim: Simulator,
    endpoint: str,
    account_id: str,
    body: dict[str, Any],
    v: Verdict,
    message_id: str | None,
    fault: FaultKind | None,
) -> None:
    sim.log.add(
        time=sim.clock.now(),
        endpoint=endpoint,
        account_id=account_id,
        body=body,
        verdict=v,
        message_id=message_id,
        fault=fault.value if fault else None,
        http_status=0 if fault is FaultKind.ACCEPT_THEN_DROP else None,
    )


# -- Send API -------------------------------------------------------------------------------


async def _messages(sim: Simulator, call: GraphCall, account_id: str) -> GraphAnswer:
    params = _params(call)
    body = _loggable(params) if isinstance(params, dict) else {}
    fault, early = await _faulted(sim, "messages", account_id, body)
    if early is not None:
        return early
    verdict: Verdict
    if isinstance(params, Refused):
        verdict = params
    else:
        account = sim.model.authorize(account_id, _token(call, params))
        if isinstance(account, Refused):
            verdict = account
        else:
            account_id = account.id
            req = parse_send(params)
            verdict = (
                req if isinstance(req, Refused) else sim.model.send(account, req, sim.clock.now())
            )
    if isinstance(verdict, Refused):
        _log_verdict(sim, "messages", account_id, body, verdict, None, None)
        return _error(sim, verdict, account_id)
    sender_action = isinstance(params, dict) and params.get("sender_action") is not None
    mid = None if sender_action else sim.ids.mid()
    _log_verdict(sim, "messages", account_id, body, verdict, mid, fault)
    if mid and sim.echoes:
        message = body.get("message")
        sim.spawn(
            sim.player.echo(
                account_id, verdict.user_id, mid, message if isinstance(message, dict) else {}
            )
        )
    if fault is FaultKind.ACCEPT_THEN_DROP:
        return _DROPPED
    result = {"recipient_id": verdict.user_id}
    if mid:
        result["message_id"] = mid
    return _json(result)


async def _public_reply(
    sim: Simulator, call: GraphCall, comment_id: str, endpoint: str
) -> GraphAnswer:
    """Instagram `/{comment}/replies`, Facebook `/{comment}/comments` (§3): no basis needed."""
    params = _params(call)
    body = _loggable(params) if isinstance(params, dict) else {}
    comment = sim.model.comments.get(comment_id)
    account_id = comment.account_id if comment else ""
    fault, early = await _faulted(sim, endpoint, account_id, body)
    if early is not None:
        return early
    verdict: Verdict
    reply_id = ""
    if isinstance(params, Refused):
        verdict = params
    else:
        account = sim.model.authorize(account_id or "me", _token(call, params))
        want = "instagram" if endpoint == "replies" else "messenger"
        if isinstance(account, Refused):
            verdict = account
        elif account.platform != want:
            right = "replies" if account.platform == "instagram" else "comments"
            verdict = refuse(Reason.BAD_PARAMETER, f"(#100) use /{{comment_id}}/{right}")
        else:
            account_id = account.id
            if account.platform == "instagram":
                reply_id = sim.ids.comment()
            else:
                reply_id = f"{comment_id.split('_')[0]}_{sim.ids.fb_object()}"
            text = str(params.get("message") or "")
            verdict = sim.model.public_reply(account, comment_id, reply_id, text, sim.clock.now())
    if isinstance(verdict, Refused):
        _log_verdict(sim, endpoint, account_id, body, verdict, None, None)
        return _error(sim, verdict, account_id)
    _log_verdict(sim, endpoint, account_id, body, verdict, reply_id, fault)
    if sim.own_comment_webhooks:
        sim.spawn(sim.player.own_comment(account_id, sim.model.comments[reply_id]))
    if fault is FaultKind.ACCEPT_THEN_DROP:
        return _DROPPED
    return _json({"id": reply_id})


# -- profiles and subscriptions -----------------------------------------------------------


async def _profile(sim: Simulator, call: GraphCall, target: str) -> GraphAnswer:
    params = _params(call)
    if isinstance(params, Refused):
        return _error(sim, params)
    _, early = await _faulted(sim, "profile", "", _loggable(params))
    if early is not None:
        return early
    owner = sim.model.authorize("me", _token(call, params))
    if isinstance(owner, Refused):
        return _error(sim, owner)
    fields = [f for f in str(params.get("fields") or "name,username").split(",") if f]
    unknown = [f for f in fields if f not in _PROFILE_FIELDS]
    if unknown:
        return _error(
            sim,
            refuse(
                Reason.BAD_PARAMETER, f"(#100) Tried accessing nonexisting field ({unknown[0]})"
            ),
        )
    if target in ("me", owner.id):
        return _json(
            {"id": owner.id, "name": f"Account {owner.id}", "username": f"account{owner.id[-4:]}"}
        )
    if (owner.id, target) not in sim.model.contacts:
        return _error(
            sim, refuse(Reason.UNKNOWN_OBJECT, f"Object with ID '{target}' does not exist")
        )
    if (no := sim.model.profile_consent(owner, target)) is not None:
        return _error(sim, no)
    p = sim.profile(target)
    values = {
        "id": p.user_id,
        "name": p.name,
        "username": p.username,
        "profile_pic": f"https://scontent.cdninstagram.com/sim/{p.user_id}.jpg",
        "follower_count": p.follower_count,
        "is_user_follow_business": p.follows_business,
        "is_business_follow_user": p.business_follows_user,
        "is_verified_user": p.is_verified_user,
        "first_name": p.name.partition(" ")[0],
        "last_name": p.name.partition(" ")[2],
        "locale": "en_US",
        "timezone": 0,
    }
    return _json({"id": p.user_id} | {f: values[f] for f in fields})


async def _subscribe(sim: Simulator, call: GraphCall, account_id: str) -> GraphAnswer:
    params = _params(call)
    if isinstance(params, Refused):
        return _error(sim, params)
    account = sim.model.authorize(account_id, _token(call, params))
    if isinstance(account, Refused):
        return _error(sim, account)
    raw = params.get("subscribed_fields") or ""
    fields = raw if isinstance(raw, list) else [f for f in str(raw).split(",") if f]
    sim.subscriptions[account.id] = [str(f) for f in fields]
    return _json({"success": True})


def _subscriptions(sim: Simulator, call: GraphCall, account_id: str) -> GraphAnswer:
    account = sim.model.authorize(account_id, _token(call, dict(call.query)))
    if isinstance(account, Refused):
        return _error(sim, account)
    if account.id not in sim.subscriptions:
        return _json({"data": []})
    app = {
        "id": sim.app_id,
        "name": "comment-dm-bot",
        "subscribed_fields": sim.subscriptions[account.id],
    }
    return _json({"data": [app]})
