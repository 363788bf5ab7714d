"""Operator actions on the store, safe while the daemon runs (SQLite WAL; the daemon's
dispatcher looks again within `SAFETY_WAKE`)."""

from __future__ import annotations

from bot.clock import Clock
from bot.config import Config
from bot.errors import ConfigError
from bot.policy import set_handoff
from bot.store.accounts import lift
from bot.store.conversations import load_state, save_state
from bot.store.db import Database

__all__ = ["release_handoff", "resume_account"]


async def resume_account(config: Config, db: Database, account_id: str) -> str | None:
    """Lift a pause (after the token was replaced or Meta lifted a restriction)."""
    if config.account(account_id) is None:
        raise ConfigError(f"no account {account_id!r} in the settings")
    async with db.transaction() as conn:
        return await lift(conn, account_id)


async def release_handoff(
    config: Config, db: Database, clock: Clock, account_id: str, user_id: str
) -> bool:
    """Hand a contact back to automation; False if no human had it."""
    account = config.account(account_id)
    if account is None:
        raise ConfigError(f"no account {account_id!r} in the settings")
    async with db.transaction() as conn:
        state = await load_state(conn, account_id, user_id, account.platform)
        if state.handoff_since is None:
            return False
        await save_state(conn, account_id, user_id, set_handoff(state, None), clock.now())
    return True
