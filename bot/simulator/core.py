"""`Simulator`: Meta in one object: the model, the send log, the faults and the webhook player.

The Graph API side is `graph.create_simulator_app(sim)`; the webhook side is `sim.player`.
Time comes only from the injected clock, so a `VirtualClock` moves days in a test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import Any

import aiohttp
from aiohttp import web

from bot.clock import Clock
from bot.config import Account
from bot.events import Platform
from bot.simulator.faults import Faults
from bot.simulator.ids import IdFactory
from bot.simulator.model import Model, Profile, SimAccount
from bot.simulator.player import Delivered, Player
from bot.simulator.record import LogEntry, SendLog
from bot.simulator.rules import Basis, Reason, SimulatorError, SimulatorRules

__all__ = ["SIMULATOR", "AccountSpec", "Simulator"]

AccountSpec = Account | SimAccount | tuple[str, str | Platform, str]


def _account(spec: AccountSpec) -> SimAccount:
    if isinstance(spec, SimAccount):
        return spec
    if isinstance(spec, Account):
        return SimAccount(spec.id, spec.platform, spec.token)
    account_id, platform, token = spec
    return SimAccount(str(account_id), Platform(str(platform).lower()), str(token))


class Simulator:
    """Plays Meta for one app: its accounts, their users, and the app secret that signs."""

    def __init__(
        self,
        clock: Clock,
        accounts: Iterable[AccountSpec],
        app_secret: str,
        webhook_url: str | None = None,
        rules: SimulatorRules | None = None,
        *,
        seed: int = 0,
        echoes: bool = True,
        own_comment_webhooks: bool = True,
        app_id: str = "940000000000001",
        webhook_timeout: float = 10.0,
    ) -> None:
        self.clock = clock
        self.rules = rules or SimulatorRules()
        self.app_secret = app_secret
        self.webhook_url = webhook_url
        # Echoes let the bot reconcile a send whose answer it never saw (§2, is_echo).
        self.echoes = echoes
        # The account's own public replies come back as comment webhooks (§2).
        self.own_comment_webhooks = own_comment_webhooks
        self.app_id = app_id
        self.webhook_timeout = webhook_timeout
        self.ids = IdFactory(seed)
        self.model = Model((_account(a) for a in accounts), self.rules)
        if not self.model.accounts:
            raise SimulatorError("the simulator needs at least one account")
        self.log = SendLog()
        self.faults = Faults(seed=seed)
        self.deliveries: list[Delivered] = []
        self.subscriptions: dict[str, list[str]] = {}
        self.player = Player(self)
        self.closing = asyncio.Event()
        self._names: dict[str, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._session: aiohttp.ClientSession | None = None

    # -- accounts and users ---------------------------------------------------------------

    def account(self, account_id: str | None = None) -> SimAccount:
        """The named account, or the first one (the default for hand-driven actions)."""
        if account_id is None:
            return next(iter(self.model.accounts.values()))
        try:
            return self.model.accounts[str(account_id)]
        except KeyError:
            known = ", ".join(self.model.accounts)
            raise SimulatorError(f"unknown account {account_id!r}; known: {known}") from None

    def user_id(self, user: str) -> str:
        """The scoped id for a user: digits are taken as an id, a name gets a stable id."""
        if user.isdigit():
            return user
        if user not in self._names:
            uid = self.ids.user()
            self._names[user] = uid
            self.model.profiles.setdefault(uid, Profile(uid, user, user.title()))
        return self._names[user]

    def profile(self, user: str) -> Profile:
        uid = self.user_id(user)
        return self.model.profiles.setdefault(uid, Profile(uid, f"user{uid[-6:]}", "User"))

    def set_profile(self, user: str, **fields: Any) -> Profile:
        """Change what `GET /{user}` answers (e.g. follows_business=True for a follow gate)."""
        p = self.profile(user)
        for key, value in fields.items():
            if not hasattr(p, key) or key == "user_id":
                raise SimulatorError(f"unknown profile field {key!r}")
            setattr(p, key, value)
        return p

    def make_unavailable(self, user: str, unavailable: bool = True) -> None:
        """Sends to this user fail with 551 / 1545041 (§5)."""
        (self.model.unavailable.add if unavailable else self.model.unavailable.discard)(
            self.user_id(user)
        )

    def make_not_receiving(self, user: str, blocked: bool = True) -> None:
        """Sends to this user fail with 10 / 2018108 (§5)."""
        (self.model.not_receiving.add if blocked else self.model.not_receiving.discard)(
            self.user_id(user)
        )

    def restrict(self, account_id: str, restricted: bool = True) -> None:
        """The account is temporarily restricted: 10 / 1893063 (§5)."""
        aid = self.account(account_id).id
        (self.model.restricted.add if restricted else self.model.restricted.discard)(aid)

    def live_start(self, account_id: str, media: str) -> None:
        self.model.start_live(self.account(account_id).id, media)

    def live_stop(self, account_id: str, media: str) -> None:
        self.model.stop_live(self.account(account_id).id, media)

    # -- the log ------------------------------------------------------------------------

    def _select(self, accepted: bool, account: str | None, user: str | None) -> list[LogEntry]:
        uid = self.user_id(user) if user is not None else None
        return [
            e
            for e in self.log
            if e.accepted is accepted
            and (account is None or e.account_id == account)
            and (uid is None or e.user_id == uid)
        ]

    def accepted(
        self, account: str | None = None, user: str | None = None, basis: Basis | None = None
    ) -> list[LogEntry]:
        return [e for e in self._select(True, account, user) if basis in (None, e.basis)]

    def refused(
        self, account: str | None = None, user: str | None = None, reason: Reason | None = None
    ) -> list[LogEntry]:
        return [e for e in self._select(False, account, user) if reason in (None, e.reason)]

    def last_mid(self, account_id: str, user_id: str) -> str | None:
        """The latest message the account sent the user (what a read or reaction points at)."""
        for e in reversed(self.log.entries):
            if e.accepted and e.account_id == account_id and e.user_id == user_id and e.message_id:
                return e.message_id
        return None

    # -- resources ----------------------------------------------------------------------

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self.webhook_timeout)
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run a background delivery (an echo); kept until done so it is never lost."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self) -> None:
        """Wait for every background delivery (tests call this before asserting on echoes)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        self.closing.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Simulator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


SIMULATOR = web.AppKey("simulator", Simulator)
