"""aiosqlite persistence: one module per aggregate, one place for SQL."""

from bot.store.db import Database

__all__ = ["Database"]
