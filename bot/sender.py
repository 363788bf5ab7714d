"""Drains the outbox: within each account's caps, earliest deadline first, asking the policy
core once more at the moment of sending (POLICY.md §1: a queued or scheduled message must
still have a basis when it goes), then records the outcome in the send log.

Each `SendClass` is its own queue under its own hourly cap (private replies, DMs; public
replies have none), so one class's backlog never holds back another's: a public "check your
DMs" reply under a post goes when due, not behind a day of DMs waiting for the 200/h cap.
The calls-per-second cap is the account's, shared by every class.

The Graph API call happens outside any transaction: a row is leased, marked 'sending' just
before the call and settled after it, each step fenced on this sender's lease (owner, state,
row count), so a second daemon on the same store never sends a row twice. A crash in between
leaves it 'sending'; such rows are settled by the `delivery` setting at the next start (or
once their lease runs out): at-most-once (default) marks them unknown, never resends.
A stop is bounded: no new send after the drain deadline, and a call still in flight then is
given up and settled as unknown, before a supervisor's SIGKILL could leave it unsettled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import aiosqlite

from bot.clock import Clock
from bot.config import Account, Config
from bot.graph import ErrorClass, GraphClient, GraphError, SendResult, build_send_body
from bot.metrics import Metrics
from bot.policy import (
    Allowed,
    ConversationState,
    PlatformProfile,
    PolicyProfile,
    Refused,
    decide,
    mark_unreachable,
    record_meta_refusal,
    record_send,
)
from bot.store.accounts import AccountHold, account_holds, hold
from bot.store.conversations import (
    load_comment,
    load_state,
    mark_comment_replied,
    save_state,
)
from bot.store.db import Database
from bot.store.outbox import (
    OutboxItem,
    Outcome,
    SendClass,
    SendKind,
    any_in_flight,
    any_past_deadline,
    claim_due,
    echo_metadata,
    finish,
    in_flight,
    log_send,
    mark_sending,
    next_due_at,
    pending_past_deadline,
    queue_status,
    release,
    release_leases,
    unclaim,
)

__all__ = ["Sender", "SenderSettings"]

log = logging.getLogger(__name__)
HOUR = timedelta(hours=1)
SECOND = timedelta(seconds=1)


def hourly_cap(rules: PlatformProfile, send_class: SendClass) -> int | None:
    """The class's sends allowed per rolling hour (POLICY.md §4); None: no hourly cap."""
    if send_class is SendClass.PRIVATE_REPLY:
        return rules.private_replies_per_hour
    if send_class is SendClass.DM:
        return rules.automated_dms_per_hour
    return None  # public comment replies: POLICY.md §4 gives no figure


@dataclass(frozen=True, slots=True)
class SenderSettings:
    # at_most_once: a send whose outcome is unknown is never repeated (a DM twice is worse
    # than one lost); at_least_once: repeated, and reconciled with the echo where one comes.
    delivery: str = "at_most_once"
    max_attempts: int = 8
    backoff_base: timedelta = timedelta(seconds=2)
    backoff_max: timedelta = timedelta(minutes=10)
    lease: timedelta = timedelta(minutes=2)


# Meta's throttles that hold the whole app, not one account (POLICY.md §5: code 4 is the
# app's rate limit; 341 "application limit reached"): every account of the app waits.
APP_WIDE_THROTTLES = frozenset({4, 341})

T = TypeVar("T")


def default_owner() -> str:
    """A lease owner unique to this process: host, pid and a random part (a pid repeats)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Sender:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        graph: GraphClient,
        profile: PolicyProfile,
        config: Config,
        metrics: Metrics,
        *,
        settings: SenderSettings | None = None,
        owner: str | None = None,
        rng: random.Random | None = None,
        before_send: Callable[[str, str | None], Awaitable[None]] | None = None,
        on_resume: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._graph = graph
        self._profile = profile
        self._config = config
        self._metrics = metrics
        self._settings = settings or SenderSettings()
        self._owner = owner or default_owner()
        self._rng = rng or random.Random()
        # The inbox worker's `settle_contact`: what the contact sent that was acknowledged is
        # applied before anything goes to them (a STOP in the backlog stops marketing sends).
        self._before_send = before_send
        # Called when a pause an operator must lift was lifted (`bot resume`, another process):
        # the daemon reads its secrets again, so the token the operator replaced is used.
        self._on_resume = on_resume
        self._paused: set[str] = set()
        # Set by `stop`: no send starts after this monotonic time, and a call in flight then
        # is given up (settled as unknown).
        self._stop_at: float | None = None
        self._stopping = asyncio.Event()
        self.next_wake: datetime | None = None

    @property
    def owner(self) -> str:
        return self._owner

    def use_config(self, config: Config) -> None:
        """The same accounts with secrets read again (bot.app.reload_secrets)."""
        self._config = config

    def stop(self, deadline: float) -> None:
        """The daemon is stopping: send nothing after `deadline` (the clock's monotonic)."""
        self._stop_at = deadline
        self._stopping.set()

    def _out_of_time(self) -> bool:
        return self._stop_at is not None and self._clock.monotonic() >= self._stop_at

    # --- the loop body -------------------------------------------------------------------

    async def run_due(self) -> int:
        """Send everything due now that the caps allow; set `next_wake`; return sends tried."""
        now = self._clock.now()
        await self._expire(now)
        await self._settle_abandoned(now)
        holds = await account_holds(self._db.reader)
        await self._noticed_resumes(holds, now)
        wakes: list[datetime] = []
        tried = 0
        for account in self._config.accounts:
            # The capped messaging classes first: they take at most their hourly share of
            # the calls-per-second budget, and public replies use what is left of it.
            for send_class in (SendClass.PRIVATE_REPLY, SendClass.DM, SendClass.PUBLIC_REPLY):
                held = holds.get(account.id)
                if held is not None and held.holds(now):
                    if held.until is not None:
                        wakes.append(held.until)
                    break
                if self._out_of_time():
                    self.next_wake = None
                    return tried
                n, wake, halted = await self._run_class(account, send_class, now)
                tried += n
                if wake is not None:
                    wakes.append(wake)
                if halted:  # paused or throttled meanwhile (maybe the whole app)
                    holds = await account_holds(self._db.reader)
        self.next_wake = max(min(wakes), now) if wakes else None
        return tried

    async def _noticed_resumes(self, holds: dict[str, AccountHold], now: datetime) -> None:
        """A pause lifted since the last round (an operator ran `bot resume` after replacing
        the token): read the secrets again before sending with the old one."""
        paused = {a for a, h in holds.items() if h.until is None and h.holds(now)}
        resumed = self._paused - paused
        self._paused = paused
        if resumed and self._on_resume is not None:
            log.info("account %s resumed: reading the secrets again", ", ".join(sorted(resumed)))
            await self._on_resume()

    async def _run_class(
        self, account: Account, send_class: SendClass, now: datetime
    ) -> tuple[int, datetime | None, bool]:
        """Send what is due in one class: sends tried, when to look again, and whether the
        account was paused or throttled meanwhile."""
        rules = self._profile.for_platform(account.platform)
        cap = hourly_cap(rules, send_class)
        reader = self._db.reader
        q = await queue_status(
            reader,
            account.id,
            send_class=send_class,
            now=now,
            second=now - SECOND,
            hour=None if cap is None else now - HOUR,
        )
        room = rules.calls_per_second - q.in_second
        hour_room: int | None = None
        if cap is not None:
            hour_room = cap - q.in_hour
            room = min(room, hour_room)
        if room > 0:
            if not q.due_now:
                # Nothing to claim: no write transaction; wake when the next row falls due.
                return 0, q.next_due, False
            async with self._db.transaction() as conn:
                items = await claim_due(
                    conn,
                    account.id,
                    send_class=send_class,
                    now=now,
                    limit=room,
                    owner=self._owner,
                    lease_until=now + self._settings.lease,
                )
            for i, item in enumerate(items):
                if self._out_of_time() or not await self._send(account, item):
                    # Stopping, paused or throttled: the rest go back untouched.
                    rest = items[i:] if self._out_of_time() else items[i + 1 :]
                    async with self._db.transaction() as conn:
                        await unclaim(conn, [x.id for x in rest], self._owner)
                    return len(items) - len(rest), None, not self._out_of_time()
            if len(items) < room:
                # Everything due went: wake when the next row falls due.
                nxt = await next_due_at(reader, account.id, send_class=send_class, after=now)
                return len(items), nxt, False
            tried = len(items)
        else:
            tried = 0
        # Capacity ran out: wake when the rolling hour (or second) frees a slot.
        if hour_room is not None and hour_room - tried <= 0 and q.oldest_in_hour is not None:
            return tried, q.oldest_in_hour + HOUR, False
        return tried, (q.oldest_in_second or now) + SECOND, False

    # --- one send ------------------------------------------------------------------------

    async def _send(self, account: Account, item: OutboxItem) -> bool:
        """One send; False when the account must stop sending (paused or throttled)."""
        if item.kind is SendKind.PUBLIC_REPLY:
            return await self._public_reply(account, item)
        if self._before_send is not None:
            await self._before_send(account.id, item.user_id)
        async with self._db.transaction() as conn:
            # Read once the write lock is held: a `now` read before it may be seconds old by
            # the time the call leaves, at a window's edge (`send_margin` covers the call).
            now = self._clock.now()
            state = await self._state(conn, account, item)
            decision = decide(state, item.intent, now, self._profile)
            if isinstance(decision, Refused):
                await self._drop(conn, item, Outcome.DROPPED, decision.reason, decision.detail)
                return True
            if not await mark_sending(conn, item.id, self._owner, now, now + self._settings.lease):
                self._lease_lost(item)
                return True
        body = self._body(account, item, decision)
        try:
            result: SendResult = await self._bounded(self._graph.send_message(account, body))
        except GraphError as exc:
            return await self._failed(account, item, decision, exc)
        async with self._db.transaction() as conn:
            now = self._clock.now()
            if not await finish(conn, item.id, "sent", self._owner):
                self._settled_elsewhere(item)
                return True
            state = await self._state(conn, account, item)
            await self._remember(conn, account, item, record_send(state, decision, now), now)
            await self._log_sent(conn, item, decision.basis.value, result.message_id, now)
        log.info(
            "sent %s to %s on %s (outbox %d)",
            item.kind,
            item.user_id or item.comment_id,
            decision.basis,
            item.id,
        )
        return True

    async def _bounded(self, call: Awaitable[T]) -> T:
        """The Graph call; once the daemon stops, given up at the drain deadline (the request
        may have reached Meta: UNKNOWN_OUTCOME, never resent)."""
        task = asyncio.ensure_future(call)
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done() and self._stop_at is not None:
                left = self._stop_at - self._clock.monotonic()
                if left > 0:
                    timer = asyncio.ensure_future(
                        self._clock.sleep_until(self._clock.now() + timedelta(seconds=left))
                    )
                    await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
                    timer.cancel()
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, GraphError):
                        await task
                    raise GraphError(
                        "the daemon stopped while this call was in flight",
                        error_class=ErrorClass.UNKNOWN_OUTCOME,
                    )
            return task.result()
        finally:
            stopping.cancel()

    def _body(self, account: Account, item: OutboxItem, allowed: Allowed) -> dict[str, Any]:
        recipient = allowed.recipient_value or item.user_id
        assert recipient is not None, "the policy allows no user-id send without a user"
        # Meta's private-reply form carries no messaging_type (POLICY.md §3).
        messaging_type = (
            None if allowed.recipient_field == "comment_id" else allowed.messaging_type
        )
        message = dict(item.message)
        if self._profile.for_platform(account.platform).echo_metadata:
            # Meta hands it back on the echo: a send whose outcome was unknown is then
            # reconciled by its own id, never by its text (`reconcile_echo`).
            message["metadata"] = echo_metadata(item.id)
        return build_send_body(
            allowed.recipient_field, recipient, message, messaging_type, allowed.tag
        )

    async def _public_reply(self, account: Account, item: OutboxItem) -> bool:
        assert item.comment_id is not None
        async with self._db.transaction() as conn:
            now = self._clock.now()
            if not await mark_sending(conn, item.id, self._owner, now, now + self._settings.lease):
                self._lease_lost(item)
                return True
        try:
            reply_id = await self._bounded(
                self._graph.reply_to_comment(
                    account, item.comment_id, str(item.message.get("text", ""))
                )
            )
        except GraphError as exc:
            return await self._failed(account, item, None, exc)
        async with self._db.transaction() as conn:
            if not await finish(conn, item.id, "sent", self._owner):
                self._settled_elsewhere(item)
                return True
            await self._log_sent(conn, item, "public_comment", reply_id, self._clock.now())
        return True

    def _lease_lost(self, item: OutboxItem) -> None:
        self._metrics.inc("sends_fenced", help="sends not made: the lease ran out or was taken")
        log.warning(
            "outbox %d not sent: its lease ran out or another sender holds it (it is sent "
            "once, by whoever holds it)",
            item.id,
        )

    def _settled_elsewhere(self, item: OutboxItem) -> None:
        self._metrics.inc("sends_fenced", help="sends not made: the lease ran out or was taken")
        log.error(
            "outbox %d was settled by another sender while its call was in flight (two "
            "daemons on one database?); it went once, recorded there",
            item.id,
        )

    async def _log_sent(
        self,
        conn: aiosqlite.Connection,
        item: OutboxItem,
        basis: str,
        message_id: str | None,
        now: datetime,
    ) -> None:
        await self._log(conn, item, Outcome.SENT, now, basis=basis, message_id=message_id)
        self._metrics.inc(
            "sends", kind=item.kind.value, basis=basis, help="messages Meta accepted"
        )

    async def _failed(
        self, account: Account, item: OutboxItem, allowed: Allowed | None, exc: GraphError
    ) -> bool:
        """Settle a failed send per POLICY.md §5; False when the account must stop for now."""
        now = self._clock.now()
        cls = exc.error_class
        self._metrics.inc("graph_errors", error_class=cls.value, help="Graph API errors")
        async with self._db.transaction() as conn:
            if cls in (ErrorClass.RETRY, ErrorClass.BACKOFF):
                if cls is ErrorClass.BACKOFF:
                    await self._throttle(conn, account, exc, now)
                retry_at = now + self._backoff(item.attempts, exc.retry_after)
                if item.attempts >= self._settings.max_attempts:
                    await self._drop(conn, item, Outcome.EXPIRED, "retries_exhausted", str(exc))
                elif not await self._still_allowed(conn, account, item, retry_at):
                    # Asked of the policy now, not of the deadline stored at queue time: the
                    # user may have written since and reopened the window.
                    await self._drop(
                        conn,
                        item,
                        Outcome.EXPIRED,
                        "retries_exhausted",
                        f"no basis will be open for the retry at {retry_at:%H:%M:%S}: {exc}",
                    )
                elif await release(conn, item.id, due_at=retry_at, owner=self._owner):
                    await self._log_error(conn, item, Outcome.RETRYING, exc, now)
                return cls is not ErrorClass.BACKOFF
            if cls.pauses_account:
                await hold(conn, [account.id], f"{cls.value}: {exc}", now, None)
                self._paused.add(account.id)
                self._metrics.inc("accounts_paused", reason=cls.value, help="accounts paused")
                log.error(
                    "account %s PAUSED (%s): %s; `bot resume` after fixing it",
                    account.id,
                    cls.value,
                    exc,
                )
                if await release(conn, item.id, due_at=now, owner=self._owner):
                    await self._log_error(conn, item, Outcome.HELD, exc, now)
                return False
            if cls is ErrorClass.UNKNOWN_OUTCOME:
                if self._settings.delivery == "at_least_once":
                    retry_at = now + self._backoff(item.attempts, None)
                    if await release(conn, item.id, due_at=retry_at, owner=self._owner):
                        await self._log_error(conn, item, Outcome.RETRYING, exc, now)
                    return True
                if not await finish(conn, item.id, "unknown", self._owner):
                    self._settled_elsewhere(item)
                    return True
                if allowed is not None:
                    # It may have gone: count it as sent for the rules (one private reply per
                    # comment, nothing after it until the user writes) and for the caps.
                    state = await self._state(conn, account, item)
                    await self._remember(
                        conn, account, item, record_send(state, allowed, now), now
                    )
                await self._log_error(conn, item, Outcome.UNKNOWN, exc, now)
                return True
            if cls is ErrorClass.UNREACHABLE and item.user_id is not None:
                state = await self._state(conn, account, item)
                await save_state(conn, account.id, item.user_id, mark_unreachable(state, now), now)
            if cls is ErrorClass.WINDOW_CLOSED:
                # The bot's own rules should have stopped this send: a policy bug to count.
                # Meta's verdict closes the basis in the contact's state, so the other sends
                # queued on it are dropped with the reason instead of refused one by one.
                self._metrics.inc("policy_bugs", help="sends Meta refused as outside a window")
                if allowed is not None:
                    state = await self._state(conn, account, item)
                    closed = record_meta_refusal(state, allowed, now, exc.code, exc.subcode)
                    await self._remember_state(conn, account, item, closed, now)
            if cls.alerts:
                # Meta refused for a reason an operator must fix (a permission or feature
                # missing, a policy bug): not a quiet drop.
                self._metrics.inc("alerts", reason=cls.value, help="errors an operator must see")
                log.error("Meta refused outbox %d (%s): %s", item.id, cls.value, exc)
            if await finish(conn, item.id, "dropped", self._owner):
                await self._log_error(conn, item, Outcome.FAILED, exc, now)
        return True

    async def _throttle(
        self, conn: aiosqlite.Connection, account: Account, exc: GraphError, now: datetime
    ) -> None:
        """Meta throttled: the account (or, for the app's own limit, every account) waits,
        recorded in the store so a restart waits too."""
        until = now + (exc.retry_after or timedelta(minutes=1))
        app_wide = exc.code in APP_WIDE_THROTTLES
        scope = [a.id for a in self._config.accounts] if app_wide else [account.id]
        await hold(conn, scope, f"throttled by Meta (code {exc.code})", now, until)
        log.warning(
            "%s throttled by Meta until %s (code %s)",
            "the app (every account)" if app_wide else f"account {account.id}",
            until,
            exc.code,
        )

    async def _still_allowed(
        self, conn: aiosqlite.Connection, account: Account, item: OutboxItem, at: datetime
    ) -> bool:
        if item.kind is SendKind.PUBLIC_REPLY:
            return True  # a comment, not a message: no basis to close
        state = await self._state(conn, account, item)
        return isinstance(decide(state, item.intent, at, self._profile), Allowed)

    # --- helpers -------------------------------------------------------------------------

    def _backoff(self, attempts: int, retry_after: timedelta | None) -> timedelta:
        if retry_after is not None:
            return retry_after
        base = self._settings.backoff_base.total_seconds() * 2 ** max(attempts - 1, 0)
        capped = min(base, self._settings.backoff_max.total_seconds())
        return timedelta(seconds=self._rng.uniform(capped / 2, capped))  # jitter

    async def _state(
        self, conn: aiosqlite.Connection, account: Account, item: OutboxItem
    ) -> ConversationState:
        if item.user_id is not None:
            return await load_state(conn, account.id, item.user_id, account.platform)
        # A comment whose author Meta left out: its own basis is all there is.
        comment = (
            await load_comment(conn, account.id, item.comment_id) if item.comment_id else None
        )
        return ConversationState(platform=account.platform, comments=(comment,) if comment else ())

    async def _remember(
        self,
        conn: aiosqlite.Connection,
        account: Account,
        item: OutboxItem,
        state: ConversationState,
        now: datetime,
    ) -> None:
        await self._remember_state(conn, account, item, state, now)
        if item.kind is SendKind.PRIVATE_REPLY and item.comment_id:
            await mark_comment_replied(conn, account.id, item.comment_id, now)

    async def _remember_state(
        self,
        conn: aiosqlite.Connection,
        account: Account,
        item: OutboxItem,
        state: ConversationState,
        now: datetime,
    ) -> None:
        """The contact's new state; an authorless comment's basis lives on its comment row."""
        if item.user_id is not None:
            await save_state(conn, account.id, item.user_id, state, now)
        elif item.comment_id is not None and any(
            r.comment_id == item.comment_id for r in state.meta_refusals
        ):
            await mark_comment_replied(conn, account.id, item.comment_id, now)

    async def _drop(
        self,
        conn: aiosqlite.Connection,
        item: OutboxItem,
        outcome: Outcome,
        reason: str,
        detail: str,
    ) -> None:
        if not await finish(conn, item.id, "dropped"):
            return
        await self._log(conn, item, outcome, self._clock.now(), reason=str(reason), detail=detail)
        self._metrics.inc(
            "sends_dropped",
            outcome=outcome.value,
            reason=str(reason),
            help="queued messages not sent, by reason",
        )
        log.info("outbox %d %s: %s (%s)", item.id, outcome, reason, detail)

    async def _log_error(
        self,
        conn: aiosqlite.Connection,
        item: OutboxItem,
        outcome: Outcome,
        exc: GraphError,
        now: datetime,
    ) -> None:
        await self._log(
            conn,
            item,
            outcome,
            now,
            reason=exc.error_class.value,
            detail=exc.message,
            error_code=exc.code,
            error_subcode=exc.subcode,
        )

    async def _log(
        self,
        conn: aiosqlite.Connection,
        item: OutboxItem,
        outcome: Outcome,
        at: datetime,
        **fields: Any,
    ) -> None:
        """One send-log row about `item`: its identity, the outcome, and what else is known."""
        await log_send(
            conn,
            at=at,
            outcome=outcome,
            account_id=item.account_id,
            user_id=item.user_id,
            kind=item.kind,
            outbox_id=item.id,
            comment_id=item.comment_id,
            **fields,
        )

    async def _expire(self, now: datetime) -> None:
        """Rows whose stored deadline passed: re-decide (a user may have reopened the window)."""
        if not await any_past_deadline(self._db.reader, now):
            return  # most ticks: a read, not a write transaction that finds nothing
        async with self._db.transaction() as conn:
            for item in await pending_past_deadline(conn, now):
                account = self._config.account(item.account_id)
                if account is None:
                    await self._drop(conn, item, Outcome.DROPPED, "unknown_account", "")
                    continue
                state = await self._state(conn, account, item)
                decision = decide(state, item.intent, now, self._profile)
                if isinstance(decision, Allowed):
                    await release(conn, item.id, due_at=item.due_at, deadline=decision.until)
                else:
                    await self._drop(
                        conn,
                        item,
                        Outcome.EXPIRED,
                        "expired_in_queue",
                        f"its basis closed while it waited: {decision.detail}",
                    )

    async def _settle_abandoned(self, now: datetime) -> None:
        """Rows left 'sending' whose lease ran out: their sender is gone (a crash, another
        daemon); settled as a restart would settle them, without waiting for one."""
        if not await any_in_flight(self._db.reader, now):
            return
        async with self._db.transaction() as conn:
            rows = await in_flight(conn, lease_ended_by=now)
            await self._settle_in_flight(
                conn, rows, now, "lease_ran_out", "its sender stopped during the call"
            )

    async def recover(self) -> int:
        """At start-up: settle rows a crash left 'sending' (see the module docstring)."""
        now = self._clock.now()
        async with self._db.transaction() as conn:
            rows = await in_flight(conn)
            await release_leases(conn)  # leased but never tried: simply back in the queue
            await self._settle_in_flight(
                conn,
                rows,
                now,
                "in_flight_at_restart",
                "the daemon stopped while this send was in flight; not resent",
            )
        if rows:
            log.warning(
                "%d sends were in flight at the last stop; settled as %s",
                len(rows),
                self._settings.delivery,
            )
        return len(rows)

    async def _settle_in_flight(
        self,
        conn: aiosqlite.Connection,
        rows: list[OutboxItem],
        now: datetime,
        reason: str,
        detail: str,
    ) -> None:
        for item in rows:
            if self._settings.delivery == "at_least_once":
                await release(conn, item.id, due_at=now)
                continue
            account = self._config.account(item.account_id)
            if account is not None and item.kind is not SendKind.PUBLIC_REPLY:
                # It may have reached Meta: count it as sent for the rules, as a live
                # unknown outcome is (a private reply then blocks other sends until
                # the user writes, exactly as Meta will).
                state = await self._state(conn, account, item)
                decision = decide(state, item.intent, now, self._profile)
                if isinstance(decision, Allowed):
                    await self._remember(
                        conn, account, item, record_send(state, decision, now), now
                    )
            await finish(conn, item.id, "unknown")
            await self._log(conn, item, Outcome.UNKNOWN, now, reason=reason, detail=detail)
