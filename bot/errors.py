"""One root exception; each subclass says what the user should do (DESIGN.md "Habits")."""

from __future__ import annotations


class BotError(Exception):
    """Root of every error the bot raises on purpose."""


class ConfigError(BotError):
    """A setting is missing or wrong; the message names the key (and file) to fix."""


class StoreUnavailable(BotError):
    """The store could not write; the webhook answers 503 so Meta retries."""
