"""`bot sandbox`: the daemon on embedded defaults, wired to the Graph API simulator.

Nothing here touches Meta: the simulator answers the bot's Graph API calls with Meta's rules
and delivers signed webhooks for the user actions a person scripts from another terminal
(`bot sandbox comment --user alice --media reel1 --text PRICING`).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import logging
import sys
from pathlib import Path
from typing import Any

from bot.clock import SystemClock
from bot.config import Config, config_from_mapping
from bot.errors import BotError
from bot.simulator import ACTIONS, Player

__all__ = ["add_sandbox_parser", "run_sandbox_command", "sandbox_config"]

log = logging.getLogger(__name__)

SANDBOX_SECRET = "sandbox-app-secret"  # not a secret: the sandbox talks only to itself
IG_ACCOUNT = "17841400000000001"
FB_PAGE = "100000000000001"


def sandbox_config(data_dir: Path, port: int, sim_port: int) -> Config:
    graph = f"http://127.0.0.1:{sim_port}"
    return config_from_mapping(
        {
            "app_secret": SANDBOX_SECRET,
            "verify_token": "sandbox-verify-token",
            "listen": {"host": "127.0.0.1", "port": port},
            "database": {"path": str(data_dir / "sandbox.sqlite3")},
            "accounts": [
                {
                    "id": IG_ACCOUNT,
                    "platform": "instagram",
                    "name": "sandbox_creator",
                    "token": "sandbox-ig-token",
                    "graph_base_url": graph,
                },
                {
                    "id": FB_PAGE,
                    "platform": "messenger",
                    "name": "Sandbox Page",
                    "token": "sandbox-page-token",
                    "graph_base_url": graph,
                },
            ],
        },
        env={},
        base=Path.cwd(),
    )


def add_sandbox_parser(sub: Any) -> None:
    sb = sub.add_parser(
        "sandbox",
        help="run the bot against the Graph API simulator, or act as a user in it",
        description="Without an action: start the simulator and the bot on embedded defaults."
        " With one: play a user action in the running sandbox.",
    )
    sb.add_argument("action", nargs="?", choices=("serve", "status", *ACTIONS), default="serve")
    sb.add_argument("--port", type=int, default=8080, help="the bot's webhook port")
    sb.add_argument("--sim-port", type=int, default=8081, help="the simulator's port")
    sb.add_argument("--data", type=Path, default=Path("data"), help="where SQLite lives")
    sb.add_argument("--account", help="account id (default: the Instagram account)")
    sb.add_argument("--user", default="alice")
    sb.add_argument("--media", default="reel1")
    sb.add_argument("--text", default="")
    sb.add_argument("--payload")
    sb.add_argument("--topic")
    sb.add_argument("--kind", default="notification_messages")
    sb.add_argument("--frequency")
    sb.add_argument("--story")
    sb.add_argument("--ref")
    sb.add_argument("--title")
    sb.add_argument("--url", default="https://cdn.example/story.jpg")
    sb.add_argument("--wait", type=float, default=3.0, help="seconds to wait for the bot's DM")


def run_sandbox_command(args: argparse.Namespace) -> int:
    if args.action == "serve":
        asyncio.run(_serve(args))
        return 0
    if args.action == "status":
        from bot.status import print_status

        config = sandbox_config(args.data, args.port, args.sim_port)
        code: int = asyncio.run(print_status(config, as_json=False))
        return code
    return _act(args)


def _act(args: argparse.Namespace) -> int:
    import time

    from bot.simulator import send_action

    sim_url = f"http://127.0.0.1:{args.sim_port}"
    action: dict[str, Any] = {"action": args.action, "user": args.user}
    optional = {
        "account": args.account,
        "media": args.media,
        "text": args.text,
        "payload": args.payload,
        "topic": args.topic,
        "frequency": args.frequency,
        "story_id": args.story,
        "ref": args.ref,
        "title": args.title,
        "url": args.url,
    }
    if args.action in ("optin",):
        optional["kind"] = args.kind
    # Each action takes its own arguments: pass on only the ones its player method names.
    takes = inspect.signature(getattr(Player, args.action)).parameters
    action.update({k: v for k, v in optional.items() if v not in (None, "") and k in takes})
    try:
        before = len(_log(sim_url))
        result = send_action(sim_url, action)
    except (OSError, BotError) as exc:
        print(f"bot sandbox: {exc} (is `bot sandbox` running?)", file=sys.stderr)
        return 2
    print(f"you ({args.user}) -> {args.action}: webhook answered {result.get('status')}")
    clock = SystemClock()
    deadline = clock.monotonic() + args.wait
    shown = before
    while clock.monotonic() < deadline:
        entries = _log(sim_url)
        for entry in entries[shown:]:
            _print_entry(entry)
        shown = max(shown, len(entries))
        time.sleep(0.2)
    if shown == before:
        print("the bot sent nothing; `bot sandbox status` shows what it recorded")
    return 0


def _log(sim_url: str) -> list[dict[str, Any]]:
    import urllib.request

    with urllib.request.urlopen(f"{sim_url}/_sim/log", timeout=5) as resp:  # noqa: S310
        data = json.loads(resp.read())
    return list(data)


def _print_entry(entry: dict[str, Any]) -> None:
    body = entry.get("body") or {}
    recipient = entry.get("recipient") or {}
    to = (
        f"comment {recipient['comment_id']}"
        if "comment_id" in recipient
        else f"user {entry.get('user_id') or next(iter(recipient.values()), '?')}"
    )
    if entry.get("endpoint") != "messages":
        to = f"public reply under {to}"
    what = _describe(body.get("message") if isinstance(body, dict) else None)
    if entry.get("accepted"):
        print(f"bot -> {to}: {what}  [basis: {entry.get('basis')}]")
    else:
        print(f"bot -> {to}: REFUSED by Meta's rules ({entry.get('reason')}): {what}")


def _describe(message: Any) -> str:
    """A message in one line: its text, or what its template shows."""
    if isinstance(message, str):
        return repr(message)
    if not isinstance(message, dict):
        return "?"
    if message.get("text"):
        return repr(message["text"])
    payload = (message.get("attachment") or {}).get("payload") or {}
    kind = payload.get("template_type", "attachment")
    label = payload.get("text") or payload.get("title") or payload.get("url") or ""
    return f"[{kind}] {label!r}"


async def _serve(args: argparse.Namespace) -> None:
    from bot.app import create_app
    from bot.cli import serve
    from bot.server import ConnectionGuard, make_runner
    from bot.simulator import Simulator, create_simulator_app

    config = sandbox_config(args.data, args.port, args.sim_port)
    clock = SystemClock()
    sim = Simulator(
        clock,
        list(config.accounts),
        SANDBOX_SECRET,
        f"http://127.0.0.1:{args.port}{config.webhook_path}",
    )
    # One guard for both servers: the open-file limit is the process's.
    guard = ConnectionGuard(config.listen_limits)
    runner = make_runner(create_simulator_app(sim), config.listen_limits)
    await runner.setup()
    await guard.listen(runner, "127.0.0.1", args.sim_port)
    log.info("Graph API simulator on http://127.0.0.1:%d", args.sim_port)
    print(
        "sandbox ready. In another terminal try:\n"
        "  bot sandbox comment --user alice --media reel1 --text PRICING\n"
        "  bot sandbox dm --user alice --text 'is there a yearly plan?'\n"
        "  bot sandbox status",
        flush=True,
    )
    try:
        await serve(config, create_app(config, clock=clock), guard)
    finally:
        await runner.cleanup()
        await sim.close()
