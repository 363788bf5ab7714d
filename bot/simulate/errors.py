"""The one error `bot simulate` raises for a wrong scenario, kept apart so every module of the
package can raise it without importing the others."""

from __future__ import annotations

from bot.errors import ConfigError

__all__ = ["ScenarioError"]


class ScenarioError(ConfigError):
    """The scenario file is wrong (or asks the simulator for something impossible); the message
    starts with file:line:column and names the key to fix."""
