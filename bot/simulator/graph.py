"""The Graph API side of the simulator: an aiohttp app that answers like Meta (POLICY.md §3, §5).

Routes accept any version prefix (`/v21.0/...`) or none. `/_sim/*` routes are the control
panel: the send log, faults, and user actions for driving a running bot by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from typing import Any

from aiohttp import web

from bot.simulator.control import add_control_routes
from bot.simulator.core import SIMULATOR, Simulator
from bot.simulator.faults import FaultKind
from bot.simulator.rules import Reason, Refused, Verdict, refuse
from bot.simulator.validate import parse_send

__all__ = ["SIMULATOR", "create_simulator_app"]

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


def create_simulator_app(sim: Simulator) -> web.Application:
    app = web.Application()
    app[SIMULATOR] = sim
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_release_hung)
    r = app.router
    add_control_routes(r)
    for prefix in (r"/{version:v\d+(?:\.\d+)?}", ""):
        r.add_post(prefix + "/{id}/messages", _messages)
        r.add_post(prefix + "/{id}/replies", _ig_public_reply)
        r.add_post(prefix + "/{id}/comments", _fb_public_reply)
        r.add_post(prefix + "/{id}/subscribed_apps", _subscribe)
        r.add_get(prefix + "/{id}/subscribed_apps", _subscriptions)
        r.add_get(prefix + "/{id}", _profile)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    sim = app[SIMULATOR]
    sim.closing.clear()
    yield
    await sim.close()


async def _release_hung(app: web.Application) -> None:
    """Let requests held by a timeout fault go, so the server can shut down promptly."""
    app[SIMULATOR].closing.set()


# -- the envelope ---------------------------------------------------------------------------


def _error(sim: Simulator, r: Refused, account_id: str = "") -> web.Response:
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
    return web.json_response({"error": err}, status=r.http_status, headers=headers)


async def _params(request: web.Request) -> dict[str, Any] | Refused:
    """Query and body merged; JSON or form-encoded, like the Graph API accepts."""
    params: dict[str, Any] = dict(request.query)
    if request.can_read_body:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                return refuse(Reason.BAD_PARAMETER, "(#100) the body is not valid JSON")
            if not isinstance(body, dict):
                return refuse(Reason.BAD_PARAMETER, "(#100) the body must be a JSON object")
            params.update(body)
        else:
            params.update((await request.post()).items())
    return params


def _token(request: web.Request, params: Mapping[str, Any]) -> str | None:
    auth = request.headers.get("Authorization", "")
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


def _drop(request: web.Request) -> web.Response:
    """Close the connection without an answer: the client sees a disconnect."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=500)


# -- faults -------------------------------------------------------------------------------


async def _faulted(
    request: web.Request, sim: Simulator, endpoint: str, account_id: str, body: dict[str, Any]
) -> tuple[FaultKind | None, web.StreamResponse | None]:
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
        return kind, _drop(request)
    log(refuse(Reason.FAULT_DROP, "connection dropped (drop fault)"), 0)
    return kind, _drop(request)


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


async def _messages(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIMULATOR]
    account_id = request.match_info["id"]
    params = await _params(request)
    body = _loggable(params) if isinstance(params, dict) else {}
    fault, early = await _faulted(request, sim, "messages", account_id, body)
    if early is not None:
        return early
    verdict: Verdict
    if isinstance(params, Refused):
        verdict = params
    else:
        account = sim.model.authorize(account_id, _token(request, params))
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
        return _drop(request)
    answer = {"recipient_id": verdict.user_id}
    if mid:
        answer["message_id"] = mid
    return web.json_response(answer)


async def _public_reply(request: web.Request, endpoint: str) -> web.StreamResponse:
    """Instagram `/{comment}/replies`, Facebook `/{comment}/comments` (§3): no basis needed."""
    sim = request.app[SIMULATOR]
    comment_id = request.match_info["id"]
    params = await _params(request)
    body = _loggable(params) if isinstance(params, dict) else {}
    comment = sim.model.comments.get(comment_id)
    account_id = comment.account_id if comment else ""
    fault, early = await _faulted(request, sim, endpoint, account_id, body)
    if early is not None:
        return early
    verdict: Verdict
    reply_id = ""
    if isinstance(params, Refused):
        verdict = params
    else:
        account = sim.model.authorize(account_id or "me", _token(request, params))
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
        return _drop(request)
    return web.json_response({"id": reply_id})


async def _ig_public_reply(request: web.Request) -> web.StreamResponse:
    return await _public_reply(request, "replies")


async def _fb_public_reply(request: web.Request) -> web.StreamResponse:
    return await _public_reply(request, "comments")


# -- profiles and subscriptions -----------------------------------------------------------


async def _profile(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIMULATOR]
    target = request.match_info["id"]
    params = await _params(request)
    if isinstance(params, Refused):
        return _error(sim, params)
    _, early = await _faulted(request, sim, "profile", "", _loggable(params))
    if early is not None:
        return early
    owner = sim.model.authorize("me", _token(request, params))
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
        return web.json_response(
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
    return web.json_response({"id": p.user_id} | {f: values[f] for f in fields})


async def _subscribe(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIMULATOR]
    params = await _params(request)
    if isinstance(params, Refused):
        return _error(sim, params)
    account = sim.model.authorize(request.match_info["id"], _token(request, params))
    if isinstance(account, Refused):
        return _error(sim, account)
    raw = params.get("subscribed_fields") or ""
    fields = raw if isinstance(raw, list) else [f for f in str(raw).split(",") if f]
    sim.subscriptions[account.id] = [str(f) for f in fields]
    return web.json_response({"success": True})


async def _subscriptions(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIMULATOR]
    account = sim.model.authorize(request.match_info["id"], _token(request, dict(request.query)))
    if isinstance(account, Refused):
        return _error(sim, account)
    if account.id not in sim.subscriptions:
        return web.json_response({"data": []})
    app = {
        "id": sim.app_id,
        "name": "comment-dm-bot",
        "subscribed_fields": sim.subscriptions[account.id],
    }
    return web.json_response({"data": [app]})
