"""The `bot` command: run, status, and (from other modules) check, simulate, sandbox."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from bot.config import Config, load_config
from bot.errors import BotError
from bot.logs import setup_logging

if TYPE_CHECKING:
    from bot.server import ConnectionGuard

__all__ = ["main", "serve"]

log = logging.getLogger("bot")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bot", description=__doc__)
    parser.add_argument(
        "--config", type=Path, default=Path("bot.yaml"), help="settings file (default bot.yaml)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon: webhooks in, messages out")
    run.add_argument(
        "--accept-new-database",
        action="store_true",
        help="start although the database lost its history or its inbox (README.md);"
        " every delivery the inbox holds is marked as seen first",
    )
    st = sub.add_parser("status", help="what the daemon's store holds, per account")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    rs = sub.add_parser("resume", help="lift an account's pause (after fixing its token)")
    rs.add_argument("--account", required=True)
    rl = sub.add_parser("release", help="hand a contact back from a human to automation")
    rl.add_argument("--account", required=True)
    rl.add_argument("--user", required=True)
    ck = sub.add_parser("check", help="validate every flow and template; report all problems")
    ck.add_argument("--flows", type=Path, help="flows folder (default: from the settings)")
    ck.add_argument("--templates", type=Path, help="templates folder (default: from settings)")
    from bot.inbox_command import add_inbox_parser, inbox_command

    add_inbox_parser(sub)
    from bot.sandbox import add_sandbox_parser, run_sandbox_command

    add_sandbox_parser(sub)
    from bot.simulate import add_simulate_parser, simulate_command

    add_simulate_parser(sub)
    args = parser.parse_args(argv)

    try:
        if args.command == "sandbox":
            setup_logging("text", "INFO")
            return run_sandbox_command(args)
        if args.command == "run":
            config = load_config(args.config)
            setup_logging(config.log_format, config.log_level, _secrets(config))
            from bot.app import create_app

            app = create_app(config, accept_new_database=args.accept_new_database)
            asyncio.run(serve(config, app))
            return 0
        if args.command == "check":
            return _check(args)
        if args.command == "simulate":
            return simulate_command(args)
        if args.command == "inbox":
            return asyncio.run(inbox_command(args, load_config(args.config), sys.stdout))
        if args.command in ("resume", "release"):
            return asyncio.run(_admin(args, load_config(args.config)))
        if args.command == "status":
            from bot.status import print_status

            config = load_config(args.config)
            code: int = asyncio.run(print_status(config, as_json=args.json))
            return code
    except BotError as exc:
        # One line per problem, each naming what to fix (config collects them all at once).
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"bot: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.command}")
    return 2


def _check(args: argparse.Namespace) -> int:
    """`bot check`: works without a settings file, on ./flows and ./templates by default."""
    from bot.flows.loader import check_command
    from bot.policy import PolicyProfile, load_profile

    flows, templates, profile = Path("flows"), Path("templates"), PolicyProfile()
    if args.config.exists():
        config = load_config(args.config)
        flows, templates = config.flows_dir, config.templates_dir
        if config.policy_profile:
            profile = load_profile(config.policy_profile)
    return check_command(args.flows or flows, args.templates or templates, profile, sys.stdout)


async def _admin(args: argparse.Namespace, config: Config) -> int:
    from bot.admin import release_handoff, resume_account
    from bot.clock import SystemClock
    from bot.store.files import open_store

    db, inbox = await open_store(
        config.database.path, config.database.synchronous, clock=SystemClock()
    )
    try:
        if args.command == "resume":
            was = await resume_account(config, db, args.account)
            print(f"account {args.account}: " + (f"resumed (was: {was})" if was else "not paused"))
        else:
            done = await release_handoff(config, db, SystemClock(), args.account, args.user)
            print(f"{args.user}: " + ("back with automation" if done else "no human had it"))
    finally:
        await inbox.close()
        await db.close()
    return 0


def _secrets(config: Config) -> list[str]:
    return [config.app_secret, config.verify_token, *(a.token for a in config.accounts)]


async def serve(
    config: Config, app: web.Application | None = None, guard: ConnectionGuard | None = None
) -> None:
    """Serve until SIGTERM or SIGINT, then stop accepting, flush, and finish in-flight work.

    `guard` bounds the connections (bot/server.py); the sandbox shares its own with the
    simulator's server, since the open-file limit is the process's.
    """
    from bot.app import create_app
    from bot.server import ConnectionGuard, make_runner
    from bot.webhook import METRICS

    app = app or create_app(config)
    runner = make_runner(app, config.listen_limits, shutdown_timeout=10.0)
    try:
        await runner.setup()
        # After start-up, so the files it opened count against the open-file limit.
        guard = guard or ConnectionGuard(config.listen_limits, metrics=app[METRICS])
    except BaseException:
        # aiohttp leaves the contexts that started open when a later one fails: the store's
        # aiosqlite threads then kept the process from exiting after the error, for good.
        await runner.cleanup()
        raise
    # What start-up built (modules, flows, templates) lives as long as the daemon: frozen,
    # the collector stops walking it. Its full collections had paused the loop 43 to 69 ms
    # under load, and that pause was the webhook acks' p99 (67-89 ms -> 23-25 ms at 200/s in
    # bench/ingest.py).
    gc.collect()
    gc.freeze()
    port = await guard.listen(runner, config.host, config.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    from bot.app import RUNTIME, on_sighup

    # The flows (checked in a thread) and the secrets, read again.
    loop.add_signal_handler(signal.SIGHUP, on_sighup, app[RUNTIME])
    log.info(
        "listening on http://%s:%d%s for %d account(s), at most %d connections",
        config.host,
        port,
        config.webhook_path,
        len(config.accounts),
        guard.cap,
    )
    # One line on stdout that supervisors and the crash test wait for.
    print(json.dumps({"ready": True, "port": port}), flush=True)
    try:
        await stop.wait()
    finally:
        log.info("stopping: no new webhooks; flushing the inbox and finishing in-flight work")
        await runner.cleanup()
        log.info("stopped")
