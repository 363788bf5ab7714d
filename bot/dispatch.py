"""One tick of timed work: fire due flow runs (follow-ups, reply timeouts), then send what is
due within the caps. Returns when to tick next; the scheduler sleeps until then."""

from __future__ import annotations

from datetime import datetime

from bot.engine import Engine
from bot.sender import Sender

__all__ = ["Dispatcher"]


class Dispatcher:
    def __init__(self, engine: Engine, sender: Sender) -> None:
        self.engine = engine
        self.sender = sender

    async def tick(self) -> datetime | None:
        # Runs first: a follow-up that fires now queues a send the sender then takes at once.
        await self.engine.run_due()
        await self.sender.run_due()
        wakes = [t for t in (self.sender.next_wake, await self.engine.next_due()) if t]
        return min(wakes) if wakes else None
