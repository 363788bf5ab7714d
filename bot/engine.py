"""Events to state changes (and, with flows and the outbox, to sends) in one transaction.

The engine runs inside the inbox worker's transaction, so a crash leaves either the whole
batch applied and its deliveries marked processed, or none of it. It works a batch at a time
(one query to load every contact's state, one to save them) because each aiosqlite call is a
thread hop, and per-event round trips starved webhook acks in bench/ingest.py.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import aiosqlite

from bot.clock import Clock
from bot.config import Config
from bot.events import Comment, Event, Unknown
from bot.metrics import Metrics
from bot.policy import PolicyProfile, apply_event
from bot.store.conversations import (
    ContactKey,
    load_states,
    record_comments,
    save_states,
    upsert_contacts,
)
from bot.store.db import Database

__all__ = ["Engine"]

log = logging.getLogger(__name__)


class Engine:
    def __init__(
        self, db: Database, clock: Clock, profile: PolicyProfile, metrics: Metrics, config: Config
    ) -> None:
        self._db = db
        self._clock = clock
        self._profile = profile
        self._metrics = metrics
        self._config = config
        self._platforms = {a.id: a.platform for a in config.accounts}

    async def handle(self, conn: aiosqlite.Connection, events: Sequence[Event]) -> None:
        usable = [ev for ev in events if self._usable(ev)]
        comments = [ev for ev in usable if isinstance(ev, Comment)]
        if comments:
            await record_comments(conn, comments)
        by_contact: dict[ContactKey, list[Event]] = {}
        for ev in usable:
            if ev.user_id is not None and ev.user_id != ev.account_id:
                by_contact.setdefault((ev.account_id, ev.user_id), []).append(ev)
        if not by_contact:
            return
        await upsert_contacts(
            conn,
            [
                (a, u, ev.timestamp, ev.username if isinstance(ev, Comment) else None)
                for (a, u), evs in by_contact.items()
                for ev in evs
            ],
        )
        states = await load_states(conn, list(by_contact), self._platforms)
        changed = {}
        for key, evs in by_contact.items():
            before = state = states[key]
            profile = self._profile.for_platform(state.platform)
            for ev in evs:
                state = apply_event(state, ev, profile)
            if state != before:
                changed[key] = state
        await save_states(conn, changed, self._clock.now())

    def _usable(self, ev: Event) -> bool:
        if isinstance(ev, Unknown):
            return False
        platform = self._platforms.get(ev.account_id)
        if platform is None:
            self._metrics.inc("events_ignored", reason="unknown_account", help="events not used")
            log.warning("event for account %s, which this bot does not serve", ev.account_id)
            return False
        if platform is not ev.platform:
            self._metrics.inc("events_ignored", reason="wrong_platform", help="events not used")
            log.warning("%s event for %s account %s", ev.platform, platform, ev.account_id)
            return False
        if isinstance(ev, Comment) and ev.is_own:
            # The account's own public replies come back as comments: never answer them.
            self._metrics.inc("events_ignored", reason="own_comment", help="events not used")
            return False
        return True
